"""The zygote's rehearsal plugin (main.py); a package only so that it ships with plugbox."""
