"""The API's shared plumbing: error answers (``errors``) and input parsing (``inputs``)."""
