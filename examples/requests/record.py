#!/usr/bin/env python3
"""Record Postfix policy delegation requests: listen on 127.0.0.1:10099 (or
the port given), save each request to request-N.txt in the current directory
and answer DUNNO, so the recorder never blocks mail. Stop it with Ctrl-C."""
import itertools, socketserver, sys

counter = itertools.count(1)

class Recorder(socketserver.StreamRequestHandler):
    def handle(self):
        while True:  # Postfix sends several requests over one connection
            lines = []
            for line in self.rfile:
                lines.append(line)
                if line in (b"\n", b"\r\n"):
                    break
            if not lines or lines[-1] not in (b"\n", b"\r\n"):
                return
            name = "request-%d.txt" % next(counter)
            with open(name, "wb") as f:
                f.writelines(lines)
            print("saved", name, flush=True)
            self.wfile.write(b"action=DUNNO\n\n")

port = int(sys.argv[1]) if len(sys.argv) > 1 else 10099
socketserver.ThreadingTCPServer.allow_reuse_address = True
with socketserver.ThreadingTCPServer(("127.0.0.1", port), Recorder) as srv:
    srv.serve_forever()
