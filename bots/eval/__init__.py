"""``personae eval``: role-play quality measured the way BeyondDialogue's AutoRPEval does.

``roles`` reads what to play (AutoRPEval role files or stored characters), ``partner`` is the model
that plays the other side, ``run`` drives the dialogues and writes results as they come, ``judge``
holds the judge prompts and reads their scores, and ``report`` turns the results into a table, a
JSON file and a chart.
"""
