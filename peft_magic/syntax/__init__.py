"""The ``%peft`` grammar, both ways: ``read`` parses a magic line or cell body; ``write``
renders the line the panel shows so that ``read`` gives back exactly the same settings."""
