#!/bin/sh
# API benchmark (see tests/bench/api.py): wrk against GET /api/v1/deliveries,
# latency of GET /api/v1/accounts/{a}/messages on a 500-message mailbox.
exec /usr/bin/python3 "$(dirname "$0")/api.py" "$@"
