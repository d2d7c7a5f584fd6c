"""The built-in conversation pipeline: Polis-style opinion math and keyword topics for one conversation.

It stands in for the full Delphi pipeline where that is not installed (the demo, laptops, tests): it
writes the same ``math_main`` layout and topic tables the narrative reports read.
"""
