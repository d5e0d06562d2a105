"""The gateway's HTTP face: the app, its shared state and one router per resource."""
