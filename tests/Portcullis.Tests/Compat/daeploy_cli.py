"""Sends what Daeploy's CLI (1.3.1) sends, request for request, with python-requests as the CLI does
(daeploy/cli/cli.py and cliutils.py of that release): `daeploy login`, `daeploy token`, `daeploy token 10`
and `daeploy ls`, and a login with a wrong password. Prints what came back as JSON.

usage: daeploy_cli.py HOST USERNAME < password
"""
import json
import sys

import requests

host, username = sys.argv[1].rstrip("/"), sys.argv[2]
password = sys.stdin.read().strip()


def bearer(token):
    # cliutils.get_request_auth_header
    return {"Authorization": f"Bearer {token}"}


def verify(token):
    # Before every command, and first thing in `login` (with an empty token when none is stored):
    # a final status below 400 means "logged in".
    return requests.get(f"{host}/auth/verify", headers=bearer(token), allow_redirects=True).status_code


def detail(response):
    # communication.py prints the JSON 'detail' of a failed request, else its raw content.
    try:
        return response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return None


report = {"verify_without_token": verify("")}

# `daeploy login`: a form in a session that follows the 303; the credential is the cookie 'daeploy'.
session = requests.Session()
login = session.post(f"{host}/auth/login", data={"username": username, "password": password})
token = session.cookies.get("daeploy")
report["login"] = {"status": login.status_code, "redirects": [r.status_code for r in login.history], "cookie": token is not None}

if token:
    report["verify_with_token"] = verify(token)
    # `daeploy token [DAYS]`: JSON {"expire_in_days": DAYS or null}; the CLI prints response.json()["Token"].
    report["tokens"] = []
    for days in (None, 10):
        response = requests.post(f"{host}/auth/token", json={"expire_in_days": days}, headers=bearer(token))
        body = response.json()
        report["tokens"].append({"days": days, "status": response.status_code, "token": body.get("Token"), "id": body.get("Id"),
                                 "detail": body.get("detail")})
    # `daeploy ls`: GET /services/, then each service's state.
    listing = requests.get(f"{host}/services/", headers=bearer(token))
    report["ls"] = {"status": listing.status_code, "content_type": listing.headers.get("content-type"), "services": []}
    if listing.ok:
        for service in listing.json():
            inspection = requests.get(f"{host}/services/~inspection", params={"name": service["name"], "version": service["version"]},
                                      headers=bearer(token))
            state = inspection.json()["State"]
            report["ls"]["services"].append({"name": service["name"], "version": service["version"], "main": service["main"],
                                             "status": state["Status"], "running": state["Running"], "since": state["StartedAt"]})

# A wrong password: no cookie, and a status and 'detail' the CLI can print.
wrong = requests.Session().post(f"{host}/auth/login", data={"username": username, "password": password + "-wrong"})
report["wrong_password"] = {"status": wrong.status_code, "detail": detail(wrong), "cookie": "daeploy" in wrong.cookies}

print(json.dumps(report))
