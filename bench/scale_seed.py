#!/usr/bin/env python3
"""Fills a Portcullis SQLite database with TOTAL personal tokens owned by the admin (user id 1) and
writes USED of them, in plaintext, to a file for the load generator. Tokens have Portcullis's format:
'pcp_' + 30 base62 chars + 6 base62 digits of CRC-32 (zlib) of the text before them.
    scale_seed.py DB TOTAL USED TOKENS_FILE"""
import datetime, hashlib, secrets, sqlite3, sys, zlib

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

def base62(n, width):
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(ALPHABET[r])
    return "".join(reversed(out))

def token():
    body = "pcp_" + "".join(secrets.choice(ALPHABET) for _ in range(30))
    return body + base62(zlib.crc32(body.encode()) & 0xFFFFFFFF, 6)

db, total, used, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
con = sqlite3.connect(db)
with open(out, "w") as f:
    def rows():
        for i in range(total):
            if i < used:
                t = token()
                f.write(t + "\n")
                digest = hashlib.sha256(t.encode()).hexdigest()
            else:
                # Filler: a stored digest of a token nobody holds (random bits are as good, and quicker).
                digest = secrets.token_hex(32)
            yield (1, f"scale-{i}", digest, "pcp_XXXX…", "api services", now)
    con.executemany("INSERT INTO api_tokens (owner_id, name, token_hash, hint, scopes, created_at) VALUES (?, ?, ?, ?, ?, ?)", rows())
con.commit()
print(f"{total} tokens in {db}; {used} written to {out}")
