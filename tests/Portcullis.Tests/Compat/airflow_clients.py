"""What Airflow's clients send to /auth/token and how they read the answer, as each does it:
the token helper of apache-airflow-client's README (JSON, requires 201, pydantic model of the answer)
and airflowctl's `auth login` (JSON to /auth/token/cli; on an error it reads 'detail' only when the
content type is exactly application/json). Prints what came back as JSON.

usage: airflow_clients.py HOST USERNAME < password
"""
import json
import sys

import requests
from pydantic import BaseModel

host, username = sys.argv[1].rstrip("/"), sys.argv[2]
password = sys.stdin.read().strip()


# apache-airflow-client README: "What we expect back from auth/token"
class AirflowAccessTokenResponse(BaseModel):
    access_token: str


def get_airflow_client_access_token(host: str, username: str, password: str) -> str:
    url = f"{host}/auth/token"
    payload = {"username": username, "password": password}
    headers = {"Content-Type": "application/json"}
    response = requests.post(url, json=payload, headers=headers)
    if response.status_code != 201:
        raise RuntimeError(f"Failed to get access token: {response.status_code} {response.text}")
    response_success = AirflowAccessTokenResponse(**response.json())
    return response_success.access_token


# airflowctl: api/operations.py LoginOperations and api/client.py ServerResponseError.from_response
def airflowctl_login(host: str, username: str, password: str):
    response = requests.post(f"{host}/auth/token/cli", json={"username": username, "password": password})
    if response.status_code >= 400:
        if response.headers.get("content-type") != "application/json":
            return {"status": response.status_code, "error": None}
        return {"status": response.status_code, "error": f"Client error message: {response.json()}"}
    return {"status": response.status_code, "access_token": response.json()["access_token"]}


report = {"readme_helper": get_airflow_client_access_token(host, username, password),
          "airflowctl": airflowctl_login(host, username, password),
          "airflowctl_wrong_password": airflowctl_login(host, username, password + "-wrong")}
print(json.dumps(report))
