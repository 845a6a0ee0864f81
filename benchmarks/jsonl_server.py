"""The request loop of the benchmark's worker processes (``torch_impl.py``,
``fresh_user_flax.py``), which run as scripts and import this module from their own folder:
one JSON request per line on stdin, one reply per line on stdout prefixed with "@@" (so that
anything a library prints is ignored), until {"op": "quit"}. An exception becomes
{"error": "..."} and the loop goes on."""

import json


def serve(handle, stdin, stdout):
  """Answers ``handle(request) -> reply dict`` for every request line until "quit"."""
  for line in stdin:
    request = json.loads(line)
    if request["op"] == "quit":
      break
    try:
      reply = handle(request)
    except Exception as e:  # report, keep serving
      reply = {"error": f"{type(e).__name__}: {e}"}
    stdout.write("@@" + json.dumps(reply) + "\n")
    stdout.flush()
