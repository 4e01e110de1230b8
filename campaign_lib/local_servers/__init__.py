"""Local stand-ins for the servers a resort runs elsewhere, for the demo and the tests:
an SFTP drop server now; the SMTP sink and the SMS and push provider emulators later."""
