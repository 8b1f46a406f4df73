"""The training tests share the root conftest's `published` fixture (train -> validate -> publish on the small
universe)."""
