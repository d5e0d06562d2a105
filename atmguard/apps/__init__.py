"""The apps on top: the command line, `atmguard up`, the demo, the local Twilio sink."""
