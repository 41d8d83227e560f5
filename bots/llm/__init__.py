"""The model-server client (``client``) and the embedded default model server (``embedded``)."""
