#!/usr/bin/env bash
# The coding-agent CLIs and clients the end-to-end tests drive (tests/test_agent_clis.py,
# tests/test_agents_command.py), at the versions package.json pins, into tests/agents/node_modules.
# Needs Node.js and npm (Debian: apt-get install nodejs npm). `.ci/run` runs it; the tests never
# install anything, they skip (or fail, under PIROUTER_REQUIRE_ALL) until this has run.
set -euo pipefail
cd "$(dirname "$0")"
npm install --no-audit --no-fund --no-package-lock --loglevel=error
