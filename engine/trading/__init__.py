"""From an approved run to booked fills: netting, orders (limits, locks, record-before-send),
fill sync and booking, execution corrections, daily marking, and the whole cycle."""
