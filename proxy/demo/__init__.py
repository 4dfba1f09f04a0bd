"""``openai-meter demo``: the product against a built-in SIMULATED upstream (no network, no key).

``simulator`` is the fake OpenAI API (canned answers, clearly labelled); ``run`` starts the real
proxy in front of it, sends a little traffic for a few teams and prints the report. Sits beside
``app.py`` in the import order (it wires the whole product); nothing else imports it.
"""
