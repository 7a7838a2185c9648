#!/usr/bin/env python3
"""Writes the seed corpus in Tests/Fuzz/corpus/ for each fuzz target.

Seeds are small valid (and a few nearly valid) inputs, built here with
Python's own encoders where one exists, so the fuzzer starts from the
shapes the parsers meet in practice. Run from the repository root;
rewriting the seeds is idempotent.
"""
import os, struct

ROOT = "Tests/Fuzz/corpus"

def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

# SMTP server: byte 0 = owner policy, byte 1 = chunk size, then a session.
sessions = {
    "plain": b"EHLO client.example\r\nMAIL FROM:<a@example.org> SIZE=100\r\nRCPT TO:<b@example.com>\r\nDATA\r\nSubject: x\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n",
    "pipelined": b"EHLO c\r\nMAIL FROM:<a@x.org> BODY=8BITMIME RET=HDRS ENVID=abc\r\nRCPT TO:<b@y.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.com\r\nRCPT TO:<c@y.com>\r\nDATA\r\nhi\r\n.\r\nRSET\r\nNOOP\r\nVRFY x\r\nQUIT\r\n",
    "helo": b"HELO [127.0.0.1]\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\n.\r\n",
    "auth": b"EHLO c\r\nAUTH PLAIN AHVzZXIAcGFzcw==\r\nAUTH LOGIN\r\ndXNlcg==\r\ncGFzcw==\r\nSTARTTLS\r\n",
    "bad": b"EHLO a\rX-Injected: yes\r\nMAIL FROM:<a@b\x00>\r\n" + b"X" * 600 + b"\r\nBDAT 10 LAST\r\n\r\n",
    "bare_lf": b"EHLO c\nMAIL FROM:<a@b.c>\nRCPT TO:<d@e.f>\nDATA\nline\n.\r\n",
}
for i, (k, v) in enumerate(sessions.items()):
    for policy in range(4):
        put("FuzzSMTPServer", f"{k}-p{policy}", bytes([policy, (i * 7) % 64]) + v)

# SMTP client: byte 0 = chunk size, byte 1 = recipients, then the server's replies.
replies = {
    "pipelining": b"220 mx.example ESMTP\r\n250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-DSN\r\n250-STARTTLS\r\n250 ENHANCEDSTATUSCODES\r\n250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go\r\n250 2.0.0 queued\r\n250 ok\r\n",
    "helo_fallback": b"220 old\r\n502 no ehlo\r\n250 hi\r\n250 ok\r\n550 5.1.1 unknown\r\n354 go\r\n250 ok\r\n",
    "reject": b"220 mx\r\n250 mx\r\n250 ok\r\n450-4.2.1 slow\r\n450 4.2.1 down\r\n503 no rcpts\r\n250 reset\r\n421 4.7.0 bye\r\n",
    "gmail421": b"220 mx.google.com ESMTP\r\n250-mx.google.com\r\n250 PIPELINING\r\n421-4.7.28 [127.0.0.1] Our system has detected an unusual rate\r\n421 4.7.28 of unsolicited mail.\r\n",
    "starttls": b"220 mx\r\n250-mx\r\n250 STARTTLS\r\n220 go ahead\r\n",
    "garbage": b"220 mx\r\nHTTP/1.1 400 Bad Request\r\n" + b"2" * 2000 + b"\r\n",
}
for i, (k, v) in enumerate(replies.items()):
    for chunk in (0, 5, 63):
        put("FuzzSMTPClient", f"{k}-c{chunk}", bytes([chunk, i]) + v)

# DNS: responses with compression, as a resolver sends them.
def name(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.split(".")) + b"\0"
def rr(ptr_or_name, rtype, ttl, rdata):
    return ptr_or_name + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata
header = lambda qd, an, ns, ar, rcode=0: struct.pack(">HHHHHH", 0x1234, 0x8180 | rcode, qd, an, ns, ar)
q = name("gmail.com") + struct.pack(">HH", 15, 1)
mx = rr(b"\xc0\x0c", 15, 300, struct.pack(">H", 5) + name("gmail-smtp-in.l.google.com"))
mx2 = rr(b"\xc0\x0c", 15, 300, struct.pack(">H", 10) + b"\x04alt1\xc0\x0c")
a = rr(b"\xc0\x0c", 1, 60, bytes([127, 0, 1, 1]))
aaaa = rr(b"\xc0\x0c", 28, 60, bytes(15) + b"\x01")
put("FuzzDNSMessage", "mx", header(1, 2, 0, 0) + q + mx + mx2)
put("FuzzDNSMessage", "a", header(1, 1, 0, 0) + name("gmail.com") + struct.pack(">HH", 1, 1) + a)
put("FuzzDNSMessage", "aaaa", header(1, 1, 0, 0) + name("gmail.com") + struct.pack(">HH", 28, 1) + aaaa)
put("FuzzDNSMessage", "nxdomain", header(1, 0, 1, 0, 3) + q + rr(b"\xc0\x0c", 6, 60, name("ns1.google.com") + b"\xc0\x0c" + struct.pack(">IIIII", 1, 2, 3, 4, 5)))
put("FuzzDNSMessage", "loop", header(1, 1, 0, 0) + q + rr(b"\xc0\x1d", 15, 1, b"\x00\x01\xc0\x1d"))

# HTTP: byte 0 = chunk size, then requests as ctl and browsers send them.
http = {
    "get": b"GET /status HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    "post": b"POST /queues/pause HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\nqueue=gm%2A",
    "pipelined": b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\nGET /queues?pattern=gmail.com%2F* HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "chunked": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "conflict": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "http10": b"\r\nGET / HTTP/1.0\n\n",
}
for i, (k, v) in enumerate(http.items()):
    for chunk in (0, 7):
        put("FuzzHTTPRequest", f"{k}-c{chunk}", bytes([chunk + i]) + v)

# Config: the shipped example and sink profiles are read by the target's
# harness from the repository; these cover the lexer's corners.
configs = {
    "small": b"smtp-listener 127.0.0.1:2525\nhttp-mgmt-port 127.0.0.1:8080\nspool /var/spool/peregrine\n<source 0/0>\n  always-allow-relaying yes\n</source>\n<virtual-mta vmta1>\n  smtp-source-host 127.0.0.2 mta1.example.com\n</virtual-mta>\n<domain gmail.com>\n  max-smtp-out 20\n  retry-after 10m\n  backoff-to-normal-after 1h\n</domain>\n",
    "patterns": b"<smtp-pattern-list errors>\n  reply /421-4\\.7\\.28/ mode=backoff\n  reply /5\\.7\\.1/ suspend=1h\n</smtp-pattern-list>\n<domain *>\n  smtp-pattern-list errors\n  bounce-after 4d\n</domain>\n",
    "macro": b"domain-macro big gmail.com,yahoo.com\n<domain $big>\n  max-msg-rate 100/m\n</domain>\n<virtual-mta-pool pool1>\n  virtual-mta vmta1\n</virtual-mta-pool>\n",
    "broken": b"<domain gmail.com\n  max-smtp-out\n</source>\n\"unterminated\n# comment \\\n",
}
for k, v in configs.items():
    put("FuzzConfig", k, v)
for src in ["examples/peregrine.conf"]:
    if os.path.exists(src):
        put("FuzzConfig", "example", open(src, "rb").read())

# Spool: records framed as SpoolRecordFormat documents them.
def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF
def varint(n):
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7F) | 0x80]); n >>= 7
    return out + bytes([n])
field = lambda b: varint(len(b)) + b
def record(kind, payload):
    meta = struct.pack("<BBHI", kind, 0, 0, len(payload))
    return struct.pack("<I", 0x31475250) + meta + struct.pack("<I", crc32c(meta + payload)) + payload
def message(i, rcpts, body):
    p = struct.pack("<QQQ", 1, i, 1700000000000) + field(b"sender@example.org") + field(b"vmta1") + field(b"job7") + field(b"")
    p += varint(len(rcpts))
    for r in rcpts:
        p += field(r) + field(b"rfc822;" + r) + bytes([3, 0])
    return record(1, p + body)
outcome = lambda i, idx, state: record(2, struct.pack("<QQIB", 1, i, idx, state))
m1 = message(1, [b"a@gmail.com"], b"Subject: hi\r\n\r\nbody\r\n")
m2 = message(2, [b"b@yahoo.com", b"c@yahoo.com"], b"x" * 64)
put("FuzzSpoolRecords", "segment", m1 + m2 + outcome(1, 0, 1) + outcome(2, 1, 2))
put("FuzzSpoolRecords", "torn", m1 + m2[:30])
put("FuzzSpoolRecords", "flipped", m1[:20] + bytes([m1[20] ^ 1]) + m1[21:] + m2)

# Accounting CSV: PowerMTA-style records as the writer produces them.
csv = {
    "records": b"type,timeLogged,orig,rcpt,dsnStatus,dsnDiag,vmta,jobId\r\nd,2026-12-05 09:00:00+0000,a@example.org,b@gmail.com,2.0.0 (success),\"smtp;250 2.0.0 OK\",vmta1,job7\r\nb,2026-12-05 09:00:01+0000,a@example.org,c@yahoo.com,5.1.1 (bad destination mailbox address),\"smtp;550 5.1.1 \"\"no such user\"\"\",vmta1,\r\n",
    "multiline": b"type,dsnDiag\nt,\"line1\r\nline2\"\n",
    "broken": b"type,orig\nd,\"unterminated\nb,x\"y\n",
}
for k, v in csv.items():
    put("FuzzAccountingCSV", k, v)

# HTTP injection API: POST /api/v1/messages bodies as applications send them.
import json
api = {
    "raw": {"sender": "news@example.org", "recipients": ["a@gmail.com", {"email": "b@yahoo.com"}],
            "raw": "From: news@example.org\r\nSubject: hi\r\n\r\nbody\r\n", "job_id": "j1", "campaign": "c", "tenant": "t"},
    "structured": {"sender": "n@example.org", "recipients": [{"email": "a@x.com", "substitutions": {"name": "Zoë", "n": 3}}],
                   "content": {"from": {"name": "Café Ünïcode", "address": "n@example.org"}, "to": ["a@x.com"],
                               "subject": "Hello {{name}} — ünïcode", "text": "Hi {{name}},\n" + "x" * 1200,
                               "html": "<p>Hi {{ name }}</p>", "headers": {"List-Unsubscribe": "<https://u.example/{{n}}>"},
                               "attachments": [{"filename": "résumé.pdf", "content_type": "application/pdf", "content": "JVBERi0xLjQK"}]},
                   "virtual_mta": "vmta1", "dkim": False},
    "bad_types": {"sender": 5, "recipients": "a@b.c", "raw": ["x"]},
    "both": {"sender": "a@b.c", "recipients": ["d@e.f"], "raw": "Subject: x\n\ny", "content": {"from": "a@b.c", "subject": "s"}},
}
for k, v in api.items():
    put("FuzzHTTPInjection", k, json.dumps(v, ensure_ascii=(k != "structured")).encode())
put("FuzzHTTPInjection", "syntax", b'{"sender": "a@b.c", "recipients": [1e400, -0, "\\ud800", tru')
put("FuzzHTTPInjection", "deep", b"[" * 300 + b"]" * 300)

# Inbound reports: a DSN (RFC 3464) and an ARF complaint (RFC 5965) built
# with Python's email package, and a plain-text bounce as old MTAs send.
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.mime.message import MIMEMessage
from email.mime.base import MIMEBase
from email import message_from_bytes
original = message_from_bytes(b"Return-Path: <news@example.org>\r\nMessage-ID: <m1@example.org>\r\nX-Job: job7\r\nTo: a@b.example\r\nSubject: hi\r\n\r\nbody\r\n")
# message/delivery-status holds field groups, which email.mime cannot build from text: written out.
dsn = (b"From: MAILER-DAEMON@mx.b.example\r\nMIME-Version: 1.0\r\n"
       b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n"
       b"--b1\r\nContent-Type: text/plain\r\n\r\nDelivery to a@b.example failed.\r\n"
       b"--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
       b"Reporting-MTA: dns; mx.b.example\r\nOriginal-Envelope-Id: env+2D1\r\n\r\n"
       b"Final-Recipient: rfc822; a@b.example\r\nOriginal-Recipient: rfc822; a@b.example\r\nAction: failed\r\n"
       b"Status: 5.1.1\r\nRemote-MTA: dns; mx.b.example\r\nDiagnostic-Code: smtp; 550 5.1.1 \"no such user\", sorry\r\n"
       b"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n" + original.as_bytes().split(b"\n\n")[0].replace(b"\n", b"\r\n")
       + b"\r\n--b1--\r\n")
assert message_from_bytes(dsn).get_content_type() == "multipart/report"
put("FuzzInboundReport", "dsn", dsn)
arf = MIMEMultipart("report", report_type="feedback-report")
arf["From"] = "feedback@fbl.example"
arf.set_boundary("b2")  # fixed, so rewriting the seeds is idempotent
arf.attach(MIMEText("This is an abuse report.\n"))
fb = MIMEBase("message", "feedback-report")
fb.set_payload("Feedback-Type: abuse\r\nUser-Agent: FBL/1.0\r\nVersion: 1\r\nOriginal-Mail-From: <news@example.org>\r\n"
               "Original-Rcpt-To: <a@b.example>\r\nSource-IP: 192.0.2.7\r\nReporting-MTA: dns; fbl.example\r\n")
arf.attach(fb)
arf.attach(MIMEMessage(original))
put("FuzzInboundReport", "arf", arf.as_bytes().replace(b"\n", b"\r\n"))
put("FuzzInboundReport", "plain", b"From: MAILER-DAEMON@old.example\r\nSubject: Undelivered Mail\r\n\r\n"
    b"<a@b.example>: host mx.b.example said: 550 5.1.1 User unknown (in reply to RCPT TO command)\r\n")
