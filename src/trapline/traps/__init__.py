"""The catchers: trap-address codec, web honeypot, SMTP trap with durable spool."""
