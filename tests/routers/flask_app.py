"""A Flask app routing the way Flask apps do (werkzeug's router on the
decoded PATH_INFO), for the differential path test: it answers which of its
handlers served the request. Usage: flask_app.py PORT"""
import sys

from flask import Flask, jsonify, request

app = Flask(__name__)


def served(handler):
    return jsonify(handler=handler, router="flask", path=request.path)


@app.route("/debug/pprof", strict_slashes=False, methods=["GET", "POST", "PUT", "DELETE"])
@app.route("/debug/pprof/<path:rest>", methods=["GET", "POST", "PUT", "DELETE"])
def pprof(rest=""):
    return served("protected")


@app.route("/admin", strict_slashes=False, methods=["GET", "POST", "PUT", "DELETE"])
@app.route("/admin/<path:rest>", methods=["GET", "POST", "PUT", "DELETE"])
def admin(rest=""):
    return served("protected")


@app.route("/private", strict_slashes=False, methods=["GET", "POST", "PUT", "DELETE"])
@app.route("/private/<path:rest>", methods=["GET", "POST", "PUT", "DELETE"])
def private(rest=""):
    return served("private")


@app.route("/t/x", strict_slashes=False, methods=["GET", "POST", "PUT", "DELETE"])
@app.route("/t/x/<path:rest>", methods=["GET", "POST", "PUT", "DELETE"])
def tenant_x(rest=""):
    return served("tenant_x")


@app.route("/fast", strict_slashes=False, methods=["GET", "POST", "PUT", "DELETE"])
@app.route("/fast/<path:rest>", methods=["GET", "POST", "PUT", "DELETE"])
def fast(rest=""):
    return served("fast")


@app.route("/", defaults={"rest": ""}, methods=["GET", "POST", "PUT", "DELETE"])
@app.route("/<path:rest>", methods=["GET", "POST", "PUT", "DELETE"])
def other(rest):
    return served("other")


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True)
