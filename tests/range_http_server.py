"""A static file server for tests, with the byte-range requests that object stores and web servers answer (http.server has none).

python tests/range_http_server.py PORT DIRECTORY  (binds 127.0.0.1 only)
"""
import os, re, sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class RangeHandler(SimpleHTTPRequestHandler):
    def send_head(self):
        match = re.fullmatch(r'bytes=(\d+)-(\d*)', self.headers.get('Range', ''))
        path = self.translate_path(self.path)
        if match is None or not os.path.isfile(path): return super().send_head()
        size = os.path.getsize(path)
        start, end = int(match.group(1)), min(int(match.group(2) or size - 1), size - 1)
        if start >= size:
            self.send_error(416, 'Requested Range Not Satisfiable'); return None
        f = open(path, 'rb'); f.seek(start)
        self.send_response(206)
        self.send_header('Content-Type', self.guess_type(path))
        self.send_header('Content-Range', f'bytes {start}-{end}/{size}')
        self.send_header('Content-Length', str(end - start + 1))
        self.send_header('Accept-Ranges', 'bytes')
        self.end_headers()
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile):
        remaining = getattr(self, '_remaining', None)
        if remaining is None: return super().copyfile(source, outputfile)
        while remaining > 0 and (chunk := source.read(min(65536, remaining))):
            outputfile.write(chunk); remaining -= len(chunk)
        self._remaining = None

    def log_message(self, *args): pass


if __name__ == '__main__':
    port, directory = int(sys.argv[1]), sys.argv[2]
    ThreadingHTTPServer(('127.0.0.1', port), partial(RangeHandler, directory=directory)).serve_forever()
