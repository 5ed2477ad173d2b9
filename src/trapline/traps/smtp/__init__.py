"""The SMTP trap: aiosmtpd server subclass (``server``), handler (``handler``), durable spool."""
