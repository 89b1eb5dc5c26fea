"""USDT probe points (spec.usdts): the binary's notes and argument specs."""
