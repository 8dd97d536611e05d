#!/bin/sh
# Container entry point: initialise the environment on first start, then run one tradeledger
# command for it (`daemon`, `fava-loop`, or any CLI command).
#
# From the compose file: TL_ENV (paper|live), TL_ACCOUNT, TL_IB_HOST, TL_IB_PORT,
# TL_IB_CLIENT_ID, TL_DB_URL (without password); from the env_file (0600): PGPASSWORD and
# TRADELEDGER_ALERT_URLS. Secrets never appear in config.toml or in the compose file.
set -eu
: "${TL_ENV:?set TL_ENV to paper or live}"
home="${TRADELEDGER_HOME:-/data}"
tl() { tradeledger --home "$home" --env "$TL_ENV" "$@"; }

if [ "${1:-}" = "fava-loop" ]; then
  # The daemon's container initialises the environment; Fava waits for it.
  until [ -f "$home/$TL_ENV/config.toml" ]; do sleep 2; done
elif [ ! -f "$home/$TL_ENV/config.toml" ]; then
  tl init --broker ib --account "${TL_ACCOUNT:?set TL_ACCOUNT}" --ib-host "${TL_IB_HOST:-host.docker.internal}" \
     --ib-port "${TL_IB_PORT:?set TL_IB_PORT}" --ib-client-id "${TL_IB_CLIENT_ID:?set TL_IB_CLIENT_ID}" \
     --db-url "${TL_DB_URL:?set TL_DB_URL}"
fi

if [ "${1:-}" = "fava-loop" ]; then
  # Fava over the exported ledger; the export is refreshed every 15 minutes (Fava reloads it).
  tl export beancount
  ( while sleep 900; do tl export beancount >/dev/null || true; done ) &
  exec fava --host 0.0.0.0 --port 5000 "$home/$TL_ENV/ledger.beancount"
fi
exec tradeledger --home "$home" --env "$TL_ENV" "$@"
