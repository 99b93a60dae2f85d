"""``latentatlas explore``: the web app over a finished run (:mod:`pipeline.explore.app`, pages in ``static/``)."""
