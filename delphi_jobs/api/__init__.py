"""``delphi-jobs serve``: the HTTP jobs API and the web dashboard, one process, one operator layer.

``app`` builds the FastAPI application on ``delphi_jobs.ops``; ``security`` is the gate every request
passes (token, Host, body size); ``errors`` the one error envelope; ``server`` binds and runs it;
``static/`` holds the dashboard (plain HTML, CSS and ES modules, shipped as package data).
"""
