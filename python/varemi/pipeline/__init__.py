"""The build: its parameters, the stage rules both engines share, the local and Ray engines."""
