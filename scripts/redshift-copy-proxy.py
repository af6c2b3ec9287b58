#!/usr/bin/env python3
"""Redshift's `COPY … FROM 's3://…'` in front of a PostgreSQL server, for tests.

There is no Redshift to test against; PostgreSQL speaks its protocol and most of its SQL, but not
its bulk load from S3. This proxy passes the PostgreSQL wire protocol through unchanged, except
for a simple-query `COPY table (cols) FROM 's3://bucket/key' <Redshift options>`: it checks the
options Redshift requires (credentials, FORMAT AS CSV, GZIP, NULL AS), reads the object from S3
(boto3; moto in the tests), and loads it over the same session with PostgreSQL's
`COPY … FROM STDIN`, so the load happens inside the client's transaction as on Redshift.

    redshift-copy-proxy.py --backend 127.0.0.1:5432 [--log FILE]

prints the port it listens on (loopback), then serves until killed. S3 is reached with the
standard AWS environment (AWS_ENDPOINT_URL_S3, keys, region). Each load appends
`<table> <bucket>/<key> <rows loaded>` to the log file.
"""

import argparse
import asyncio
import gzip
import os
import re
import struct
import sys

import boto3

COPY = re.compile(
    r"^\s*COPY\s+(?P<table>[\w.]+)\s*\((?P<columns>[^)]*)\)\s+FROM\s+'s3://(?P<bucket>[^/']+)/(?P<key>(?:[^']|'')+)'\s+(?P<options>.*?)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
CREDENTIALS = re.compile(
    r"IAM_ROLE\s+'arn:aws:iam::\d{12}:role/[\w+=,.@/-]+'"
    r"|ACCESS_KEY_ID\s+'(?P<key>[^']+)'\s+SECRET_ACCESS_KEY\s+'(?P<secret>[^']+)'(\s+SESSION_TOKEN\s+'[^']+')?",
    re.IGNORECASE,
)


def error_response(message):
    fields = b"SERROR\x00C42601\x00M" + message.encode() + b"\x00\x00"
    return b"E" + struct.pack("!I", 4 + len(fields)) + fields


async def read_message(reader):
    head = await reader.readexactly(5)
    length = struct.unpack("!I", head[1:])[0]
    return head[:1], head + await reader.readexactly(length - 4)


class Session:
    def __init__(self, client_reader, client_writer, backend, log):
        self.client_reader, self.client_writer = client_reader, client_writer
        self.backend = backend
        self.log = log
        self.captured = None  # a queue while a load owns the backend's replies

    async def run(self):
        host, port = self.backend
        self.server_reader, self.server_writer = await asyncio.open_connection(host, port)
        pump = asyncio.create_task(self.backend_to_client())
        try:
            await self.client_to_backend()
        finally:
            pump.cancel()
            self.server_writer.close()
            self.client_writer.close()

    async def backend_to_client(self):
        try:
            while True:
                kind, message = await read_message(self.server_reader)
                if self.captured is not None:
                    await self.captured.put((kind, message))
                else:
                    self.client_writer.write(message)
                    await self.client_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.client_writer.close()

    async def client_to_backend(self):
        # Startup: no type byte; an SSL request is declined.
        while True:
            length = struct.unpack("!I", await self.client_reader.readexactly(4))[0]
            body = await self.client_reader.readexactly(length - 4)
            if struct.unpack("!I", body[:4])[0] == 80877103:
                self.client_writer.write(b"N")
                await self.client_writer.drain()
                continue
            self.server_writer.write(struct.pack("!I", length) + body)
            await self.server_writer.drain()
            break
        try:
            while True:
                kind, message = await read_message(self.client_reader)
                if kind == b"Q":
                    sql = message[5:-1].decode()
                    match = COPY.match(sql)
                    if match:
                        await self.load(match)
                        continue
                self.server_writer.write(message)
                await self.server_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    async def reply(self, messages):
        for message in messages:
            self.client_writer.write(message)
        await self.client_writer.drain()

    async def load(self, match):
        options = match["options"]
        problems = []
        credentials = CREDENTIALS.search(options)
        if not credentials:
            problems.append("COPY from S3 needs IAM_ROLE or ACCESS_KEY_ID/SECRET_ACCESS_KEY")
        elif credentials["key"] and (
            credentials["key"] != os.environ.get("AWS_ACCESS_KEY_ID")
            or credentials["secret"] != os.environ.get("AWS_SECRET_ACCESS_KEY")
        ):
            problems.append("S3ServiceException: The AWS Access Key Id you provided does not exist")
        for required in (r"FORMAT\s+AS\s+CSV", r"\bGZIP\b", r"NULL\s+AS\s+'\\\\N'"):
            if not re.search(required, options, re.IGNORECASE):
                problems.append(f"this test server expects the option {required}")
        key = match["key"].replace("''", "'")
        data = None
        if not problems:
            try:
                s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3"))
                body = s3.get_object(Bucket=match["bucket"], Key=key)["Body"].read()
                data = gzip.decompress(body)
            except Exception as error:  # noqa: BLE001 - reported to the client as Redshift would
                problems.append(f"S3ServiceException: {error}")
        if problems:
            # The client is in a transaction: make the backend fail it too, as Redshift's error
            # would, then report the reason.
            self.captured = asyncio.Queue()
            self.server_writer.write(query("SELECT 1/0"))
            await self.server_writer.drain()
            while (await self.captured.get())[0] != b"Z":
                pass
            self.captured = None
            await self.reply([error_response("; ".join(problems)), ready_in_failed_transaction()])
            return
        self.captured = asyncio.Queue()
        self.server_writer.write(
            query(f"COPY {match['table']} ({match['columns']}) FROM STDIN (FORMAT csv, NULL '\\N')")
        )
        await self.server_writer.drain()
        kind, message = await self.captured.get()
        replies = []
        if kind == b"G":
            for start in range(0, len(data), 1 << 16):
                chunk = data[start : start + (1 << 16)]
                self.server_writer.write(b"d" + struct.pack("!I", 4 + len(chunk)) + chunk)
            self.server_writer.write(b"c\x00\x00\x00\x04")
            await self.server_writer.drain()
        else:
            replies.append(message)
        while True:
            kind, message = await self.captured.get()
            replies.append(message)
            if kind == b"Z":
                break
        self.captured = None
        tags = [m[5:-1].decode() for m in replies if m[:1] == b"C"]
        rows = tags[0].split()[-1] if tags else "failed"
        with open(self.log, "a") if self.log else open(os.devnull, "w") as log:
            log.write(f"{match['table']} {match['bucket']}/{key} {rows}\n")
        await self.reply(replies)


def query(sql):
    body = sql.encode() + b"\x00"
    return b"Q" + struct.pack("!I", 4 + len(body)) + body


def ready_in_failed_transaction():
    return b"Z\x00\x00\x00\x05E"


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True, help="HOST:PORT of the PostgreSQL server")
    parser.add_argument("--log", help="append one line per load here")
    args = parser.parse_args()
    host, port = args.backend.rsplit(":", 1)

    async def serve(reader, writer):
        await Session(reader, writer, (host, int(port)), args.log).run()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
