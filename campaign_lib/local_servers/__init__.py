"""Local stand-ins for the servers a resort runs elsewhere, for the demo and the tests: the
SFTP drop server (sftp), the SMTP sink (smtp) and the SMS and push provider emulators
(providers)."""
