"""benchbone's built-in plugins. Each module uses only the public benchbone API."""
