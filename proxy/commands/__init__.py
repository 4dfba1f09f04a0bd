"""One module per ``openai-meter`` sub-command; each exposes ``register(subparsers)``.

``register`` adds its parser and sets ``func`` (``Callable[[argparse.Namespace], int]``) as the
parser default; ``proxy.cli`` lists the modules and dispatches.
"""
