"""Running as a service: systemd notify/watchdog, health and metrics over HTTP."""
