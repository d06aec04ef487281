"""openapi -- openapi.yaml as the contract the integration tests check.

    spec = openapi.Spec(path)                 # parsed with yamlsub (stdlib only)
    spec.lint()  -> [problems]                 # empty when the file is sound
    spec.check(method, path, status, ctype, body_bytes) -> [problems]
    openapi.validate(schema, value, spec.doc) -> [problems]

The validator implements the JSON Schema keywords the file uses: type (also
a list of types, "null" included), properties, required,
additionalProperties (false or a schema), items, enum, const, oneOf, anyOf,
$ref (to "#/..."), minimum, maximum, minLength, maxLength, pattern, and
format "date-time" (loosely: RFC 3339 shape).  An unknown keyword in a
schema is a lint problem, so the file cannot use something the validator
silently ignores.

check() finds the path template matching a concrete request path, the
operation for the method, the response for the status (no "default": an
undocumented status is a problem), the media type for the Content-Type, and
validates a JSON body against its schema.  Python 3 standard library only.
"""

import json
import re
import urllib.parse

import yamlsub

KNOWN_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "items", "enum", "const",
    "oneOf", "anyOf", "$ref", "minimum", "maximum", "minLength", "maxLength", "pattern",
    "format", "description", "contentMediaType", "contentEncoding",
}
DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def resolve(doc, ref):
    if not ref.startswith("#/"):
        raise KeyError("only local $ref are supported: %r" % ref)
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise KeyError("unresolved $ref %r" % ref)
        node = node[part]
    return node


def _type_ok(t, v):
    if t == "null":
        return v is None
    if t == "boolean":
        return isinstance(v, bool)
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool) or (
            isinstance(v, float) and v.is_integer())
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t == "string":
        return isinstance(v, str)
    if t == "array":
        return isinstance(v, list)
    if t == "object":
        return isinstance(v, dict)
    raise ValueError("unknown type %r" % t)


def validate(schema, v, doc, where="$", depth=0):
    """Problems (strings) of value v against schema; [] when valid."""
    if depth > 64:
        return ["%s: schema nesting too deep" % where]
    if schema is True or schema == {}:
        return []
    if "$ref" in schema:
        return validate(resolve(doc, schema["$ref"]), v, doc, where, depth + 1)
    out = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(t, v) for t in types):
            return ["%s: %s is not of type %s" % (where, _show(v), "/".join(types))]
    if "const" in schema and v != schema["const"]:
        out.append("%s: %s is not %r" % (where, _show(v), schema["const"]))
    if "enum" in schema and v not in schema["enum"]:
        out.append("%s: %s is not one of %s" % (where, _show(v), schema["enum"]))
    if isinstance(v, str):
        if "minLength" in schema and len(v) < schema["minLength"]:
            out.append("%s: shorter than %d" % (where, schema["minLength"]))
        if "maxLength" in schema and len(v) > schema["maxLength"]:
            out.append("%s: longer than %d" % (where, schema["maxLength"]))
        if "pattern" in schema and not re.search(schema["pattern"], v):
            out.append("%s: %s does not match %s" % (where, _show(v), schema["pattern"]))
        if schema.get("format") == "date-time" and not DATE_TIME.match(v):
            out.append("%s: %s is not a date-time" % (where, _show(v)))
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if "minimum" in schema and v < schema["minimum"]:
            out.append("%s: %s < %s" % (where, v, schema["minimum"]))
        if "maximum" in schema and v > schema["maximum"]:
            out.append("%s: %s > %s" % (where, v, schema["maximum"]))
    if isinstance(v, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in v:
                out.append("%s: required property %r missing" % (where, k))
        for k, item in v.items():
            if k in props:
                out.extend(validate(props[k], item, doc, "%s.%s" % (where, k), depth + 1))
            elif "additionalProperties" in schema:
                ap = schema["additionalProperties"]
                if ap is False:
                    out.append("%s: property %r is not allowed" % (where, k))
                elif isinstance(ap, dict):
                    out.extend(validate(ap, item, doc, "%s.%s" % (where, k), depth + 1))
    if isinstance(v, list) and "items" in schema:
        for i, item in enumerate(v):
            out.extend(validate(schema["items"], item, doc, "%s[%d]" % (where, i), depth + 1))
    if "anyOf" in schema:
        if not any(not validate(s, v, doc, where, depth + 1) for s in schema["anyOf"]):
            out.append("%s: %s matches none of anyOf" % (where, _show(v)))
    if "oneOf" in schema:
        n = sum(1 for s in schema["oneOf"] if not validate(s, v, doc, where, depth + 1))
        if n != 1:
            out.append("%s: %s matches %d of oneOf (must be exactly 1)" % (where, _show(v), n))
    return out


def _show(v):
    s = json.dumps(v, ensure_ascii=False)
    return s if len(s) <= 60 else s[:57] + "..."


class Spec:
    def __init__(self, path):
        self.path = path
        self.doc = yamlsub.load_file(path)
        self._templates = []
        for tpl in self.doc.get("paths", {}):
            segs = tpl.strip("/").split("/") if tpl != "/" else []
            self._templates.append((tpl, segs))

    # ---- lint -------------------------------------------------------------

    def lint(self):
        d, problems = self.doc, []
        if not str(d.get("openapi", "")).startswith("3.1"):
            problems.append("openapi: not 3.1.x")
        for key in ("info", "paths", "components", "webhooks"):
            if key not in d:
                problems.append("%s: missing" % key)
        if "bearer" not in d.get("components", {}).get("securitySchemes", {}):
            problems.append("components.securitySchemes.bearer: missing")
        op_ids = {}
        # every $ref resolves; every schema uses only known keywords
        def walk(node, where, in_schema):
            if isinstance(node, dict):
                if "$ref" in node:
                    try:
                        resolve(d, node["$ref"])
                    except KeyError as exc:
                        problems.append("%s: %s" % (where, exc))
                if in_schema:
                    for k in node:
                        if k not in KNOWN_KEYWORDS:
                            problems.append("%s: schema keyword %r is not supported by the "
                                            "test validator" % (where, k))
                for k, v in node.items():
                    child_schema = False
                    if k == "schema" or (where.endswith(".components.schemas")):
                        child_schema = True
                    elif in_schema and k in ("items", "additionalProperties"):
                        child_schema = isinstance(v, dict)
                    elif in_schema and k == "properties":
                        for pk, pv in v.items():
                            walk(pv, "%s.properties.%s" % (where, pk), True)
                        continue
                    elif in_schema and k in ("oneOf", "anyOf"):
                        for i, sv in enumerate(v):
                            walk(sv, "%s.%s[%d]" % (where, k, i), True)
                        continue
                    walk(v, "%s.%s" % (where, k), child_schema)
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, "%s[%d]" % (where, i), in_schema)
        walk(d, "", False)

        def check_op(where, op, path_params, template):
            oid = op.get("operationId")
            if not oid:
                problems.append("%s: no operationId" % where)
            elif oid in op_ids:
                problems.append("%s: operationId %s also used by %s" % (where, oid, op_ids[oid]))
            else:
                op_ids[oid] = where
            params = list(path_params) + [self._deref(p) for p in op.get("parameters", [])]
            declared = {p["name"] for p in params if p.get("in") == "path"}
            for p in params:
                if p.get("in") == "path" and not p.get("required"):
                    problems.append("%s: path parameter %s must be required" % (where, p["name"]))
                if "schema" not in p:
                    problems.append("%s: parameter %s has no schema" % (where, p.get("name")))
            if template is not None:
                used = set(re.findall(r"\{([^}]+)\}", template))
                for n in used - declared:
                    problems.append("%s: path parameter {%s} not declared" % (where, n))
                for n in declared - used:
                    problems.append("%s: parameter %s declared in path but not in the template"
                                    % (where, n))
            if not op.get("responses"):
                problems.append("%s: no responses" % where)
            for code, resp in op.get("responses", {}).items():
                resp = self._deref(resp)
                if not re.fullmatch(r"[1-5][0-9][0-9]", str(code)):
                    problems.append("%s: response %r is not a status code" % (where, code))
                if not resp.get("description"):
                    problems.append("%s: response %s has no description" % (where, code))
                if template is not None and str(code).startswith(("4", "5")):
                    ct = resp.get("content", {})
                    if "application/problem+json" not in ct:
                        problems.append("%s: error response %s is not problem+json" % (where, code))

        for tpl, item in d.get("paths", {}).items():
            path_params = [self._deref(p) for p in item.get("parameters", [])]
            for m in HTTP_METHODS:
                if m in item:
                    check_op("paths.%s.%s" % (tpl, m), item[m], path_params, tpl)
        for name, item in d.get("webhooks", {}).items():
            for m in HTTP_METHODS:
                if m in item:
                    check_op("webhooks.%s.%s" % (name, m), item[m], [], None)
        return problems

    def _deref(self, node):
        seen = 0
        while isinstance(node, dict) and "$ref" in node and seen < 16:
            node = resolve(self.doc, node["$ref"])
            seen += 1
        return node

    # ---- checking a live response -----------------------------------------

    def find(self, path):
        """The path template matching a raw request path (query removed)."""
        raw = urllib.parse.urlsplit(path).path
        segs = raw.strip("/").split("/") if raw != "/" else []
        best = None
        for tpl, tsegs in self._templates:
            if len(tsegs) != len(segs):
                continue
            ok, literal = True, 0
            for t, s in zip(tsegs, segs):
                if t.startswith("{"):
                    ok = ok and s != ""
                elif t == s:
                    literal += 1
                else:
                    ok = False
            if ok and (best is None or literal > best[1]):
                best = (tpl, literal)
        return best[0] if best else None

    def schema_for(self, method, path, status, ctype):
        tpl = self.find(path)
        if tpl is None:
            return None, ["no path in openapi.yaml matches %s" % path]
        op = self.doc["paths"][tpl].get(method.lower())
        if op is None:
            if status == 405:
                # a 405 answer for a method the path does not have: the
                # path's other operations document the MethodNotAllowed reply
                ops = [self.doc["paths"][tpl][m] for m in HTTP_METHODS if m in self.doc["paths"][tpl]]
                for o in ops:
                    if "405" in o.get("responses", {}):
                        op = o
                        break
            if op is None:
                return None, ["%s %s: no operation for this method in openapi.yaml" % (method, tpl)]
        resp = op.get("responses", {}).get(str(status))
        if resp is None:
            return None, ["%s %s: status %s is not documented" % (method, tpl, status)]
        resp = self._deref(resp)
        content = resp.get("content")
        if not content:
            return None, [] if not ctype or status in (204, 304) else [
                "%s %s %s: a body (%s) where none is documented" % (method, tpl, status, ctype)]
        base = (ctype or "").split(";")[0].strip().lower()
        media = content.get(base)
        if media is None:
            for k, v in content.items():
                if k == "*/*" or (k.endswith("/*") and base.startswith(k[:-1])):
                    media = v
        if media is None:
            return None, ["%s %s %s: content type %r not documented (%s)" % (
                method, tpl, status, base, ", ".join(content))]
        return media.get("schema"), []

    def check(self, method, path, status, ctype, body):
        schema, problems = self.schema_for(method, path, status, ctype)
        if problems or schema is None:
            return problems
        base = (ctype or "").split(";")[0].strip().lower()
        if base.endswith("json"):
            try:
                value = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                return ["%s %s %s: body is not JSON: %s" % (method, path, status, exc)]
            return ["%s %s %s: %s" % (method, path, status, p)
                    for p in validate(schema, value, self.doc)]
        return []
