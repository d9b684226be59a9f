"""The daemon's HTTP side, the only package that imports `aiohttp.web`."""
