"""meshsim's command-line interface (installed as ``meshsim.cli``).

One module per command; each parses its options, calls the library and renders.
"""
