"""openapi -- openapi.yaml as the contract the integration tests check.

    spec = openapi.Spec(path)                 # read with PyYAML (python3-yaml)
    spec.lint()  -> [problems]                 # empty when the file is sound
    spec.check(method, path, status, ctype, body_bytes) -> [problems]
    openapi.validate(schema, value, spec.doc) -> [problems]

Schemas are JSON Schema 2020-12 (what OpenAPI 3.1 uses), validated by
python3-jsonschema's Draft202012Validator; a "$ref" such as
"#/components/schemas/Problem" resolves into the document's components.
Format "date-time" is checked (RFC 3339: date, time, offset or Z); other
formats are not.

check() finds the path template matching a concrete request path, the
operation for the method, the response for the status (no "default": an
undocumented status is a problem), the media type for the Content-Type, and
validates a JSON body against its schema.

lint() checks the document itself: OpenAPI 3.1; info, paths, components,
webhooks and the bearer security scheme present; plain JSON data (string
keys, no YAML-only values such as unquoted dates; no key given twice, which
YAML readers otherwise resolve silently); every $ref resolves; every schema
is a valid 2020-12 schema using only known keywords (so a misspelt keyword
is not silently ignored); every operation has a unique operationId,
parameters with schemas, path parameters required and matching the
template, responses with 3-digit codes and descriptions, problem+json for
4xx/5xx; every example validates against its schema.
"""

import datetime
import json
import re
import urllib.parse

import jsonschema
import yaml

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# JSON Schema 2020-12 keywords (core, applicator, unevaluated, validation,
# meta-data, format, content) and OpenAPI 3.1's additions to the Schema
# Object; "x-..." extensions are allowed too.
SCHEMA_KEYWORDS = {
    "$schema", "$id", "$ref", "$anchor", "$dynamicRef", "$dynamicAnchor", "$vocabulary", "$comment",
    "$defs", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas",
    "prefixItems", "items", "contains", "properties", "patternProperties", "additionalProperties",
    "propertyNames", "unevaluatedItems", "unevaluatedProperties", "type", "enum", "const",
    "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength",
    "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxContains", "minContains",
    "maxProperties", "minProperties", "required", "dependentRequired", "title", "description",
    "default", "deprecated", "readOnly", "writeOnly", "examples", "format", "contentEncoding",
    "contentMediaType", "contentSchema", "discriminator", "xml", "externalDocs", "example",
}
# keywords whose value is a schema, a list of schemas, or a map of schemas
_ONE = ("not", "if", "then", "else", "items", "contains", "additionalProperties", "propertyNames",
        "unevaluatedItems", "unevaluatedProperties", "contentSchema")
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")
_MAP = ("properties", "patternProperties", "dependentSchemas", "$defs")

_DATE_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("date-time")
def _is_date_time(value):
    if not isinstance(value, str):
        return True
    m = _DATE_TIME.match(value)
    if not m:
        return False
    try:
        datetime.date.fromisoformat(m.group(1))
    except ValueError:
        return False
    return int(m.group(2)) < 24 and int(m.group(3)) < 60 and int(m.group(4)) <= 60   # 60: leap second


# ---- reading ------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            dup = key in seen
        except TypeError:   # an unhashable key: the base constructor says so
            break
        if dup:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                "key %r given twice" % (key,), key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_file(path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_Loader)  # noqa: S506 -- a SafeLoader


def resolve(doc, ref):
    """The node a local "#/..." JSON pointer names; KeyError if none."""
    if not ref.startswith("#/"):
        raise KeyError("only local $ref are supported: %r" % ref)
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise KeyError("unresolved $ref %r" % ref)
        node = node[part]
    return node


# ---- validating values ------------------------------------------------------------------

_validators = {}


def _validator(schema, doc):
    """A Draft202012Validator for schema whose "#/components/..." refs resolve
    into doc (the schema is validated as a root that also carries doc's
    components)."""
    key = (id(schema), id(doc))
    hit = _validators.get(key)
    if hit is None or hit[0] is not schema or hit[1] is not doc:
        if isinstance(schema, bool):
            root = schema
        else:
            root = dict(schema)
            root.setdefault("components", doc.get("components", {}))
        hit = (schema, doc, jsonschema.Draft202012Validator(root, format_checker=_FORMATS))
        _validators[key] = hit
    return hit[2]


def _where(path, base="$"):
    out = base
    for p in path:
        out += "[%d]" % p if isinstance(p, int) else ".%s" % p
    return out


def _clip(s, n=300):
    return s if len(s) <= n else s[:n - 3] + "..."


def validate(schema, value, doc, where="$"):
    """Problems (strings) of value against schema; [] when valid.  Each says
    where in the value ("$.data.message.from"), what is wrong, and for a
    failed oneOf/anyOf the closest branch's own complaint."""
    out = []
    errors = sorted(_validator(schema, doc).iter_errors(value), key=lambda e: list(map(str, e.path)))
    for e in errors:
        text = "%s: %s" % (_where(e.absolute_path, where), _clip(e.message))
        if e.context:
            best = jsonschema.exceptions.best_match(e.context)
            text += " (closest: %s: %s)" % (_where(best.absolute_path, where), _clip(best.message, 200))
        out.append(text)
    return out


# ---- the document -------------------------------------------------------------------------

class Spec:
    def __init__(self, path):
        self.path = path
        self.doc = load_file(path)
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
        self._lint_data(d, "", problems)
        self._lint_refs(d, "", problems)
        for where, schema in self._schemas():
            self._lint_schema(schema, where, problems)
        self._lint_operations(problems)
        self._lint_examples(problems)
        return problems

    def _lint_data(self, node, where, problems):
        """Plain JSON data: string keys, and str/number/bool/null leaves."""
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str):
                    problems.append("%s: key %r is a %s, not a string (quote it)"
                                    % (where or "(top)", k, type(k).__name__))
                self._lint_data(v, "%s.%s" % (where, k), problems)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                self._lint_data(v, "%s[%d]" % (where, i), problems)
        elif not (node is None or isinstance(node, (str, int, float, bool))):
            problems.append("%s: %r is a %s, not JSON data (quote it)" % (where, node, type(node).__name__))

    def _lint_refs(self, node, where, problems):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None:
                try:
                    resolve(self.doc, ref)
                except KeyError as exc:
                    problems.append("%s: %s" % (where, exc.args[0]))
            for k, v in node.items():
                self._lint_refs(v, "%s.%s" % (where, k), problems)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                self._lint_refs(v, "%s[%d]" % (where, i), problems)

    def _schemas(self):
        """(where, schema) for every named schema and every "schema" value
        outside the schemas themselves."""
        out = [(".components.schemas.%s" % k, v)
               for k, v in self.doc.get("components", {}).get("schemas", {}).items()]

        def walk(node, where):
            if isinstance(node, dict):
                for k, v in node.items():
                    if k == "schema":
                        out.append(("%s.schema" % where, v))
                    elif not (where == ".components" and k == "schemas"):
                        walk(v, "%s.%s" % (where, k))
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, "%s[%d]" % (where, i))
        walk(self.doc, "")
        return out

    def _lint_schema(self, schema, where, problems, top=True):
        if isinstance(schema, bool):
            return
        if not isinstance(schema, dict):
            problems.append("%s: a schema must be an object or a boolean" % where)
            return
        if top:
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.exceptions.SchemaError as exc:
                problems.append("%s%s: not a valid JSON Schema 2020-12 schema: %s"
                                % (where, _where(exc.absolute_path, ""), _clip(exc.message)))
        for k, v in schema.items():
            if k not in SCHEMA_KEYWORDS and not k.startswith("x-"):
                problems.append("%s: %r is not a JSON Schema 2020-12 or OpenAPI keyword" % (where, k))
            elif k in _ONE:
                self._lint_schema(v, "%s.%s" % (where, k), problems, False)
            elif k in _LIST and isinstance(v, list):
                for i, s in enumerate(v):
                    self._lint_schema(s, "%s.%s[%d]" % (where, k, i), problems, False)
            elif k in _MAP and isinstance(v, dict):
                for name, s in v.items():
                    self._lint_schema(s, "%s.%s.%s" % (where, k, name), problems, False)

    def _lint_operations(self, problems):
        op_ids = {}

        def check_op(where, op, path_params, template):
            oid = op.get("operationId")
            if not oid:
                problems.append("%s: no operationId" % where)
            elif oid in op_ids:
                problems.append("%s: operationId %s also used by %s" % (where, oid, op_ids[oid]))
            else:
                op_ids[oid] = where
            params = list(path_params) + [self._deref(p) for p in op.get("parameters", [])]
            declared = {p.get("name") for p in params if p.get("in") == "path"}
            for p in params:
                if p.get("in") == "path" and not p.get("required"):
                    problems.append("%s: path parameter %s must be required" % (where, p.get("name")))
                if "schema" not in p:
                    problems.append("%s: parameter %s has no schema" % (where, p.get("name")))
            if template is not None:
                used = set(re.findall(r"\{([^}]+)\}", template))
                for n in sorted(used - declared):
                    problems.append("%s: path parameter {%s} not declared" % (where, n))
                for n in sorted(declared - used):
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
                    if "application/problem+json" not in resp.get("content", {}):
                        problems.append("%s: error response %s is not problem+json" % (where, code))

        for tpl, item in self.doc.get("paths", {}).items():
            path_params = [self._deref(p) for p in item.get("parameters", [])]
            for m in HTTP_METHODS:
                if m in item:
                    check_op("paths.%s.%s" % (tpl, m), item[m], path_params, tpl)
        for name, item in self.doc.get("webhooks", {}).items():
            for m in HTTP_METHODS:
                if m in item:
                    check_op("webhooks.%s.%s" % (name, m), item[m], [], None)

    def _lint_examples(self, problems):
        """Every example (of a media type, a parameter or a schema) is valid
        against the schema it illustrates."""
        def check(schema, value, where):
            for p in validate(schema, value, self.doc):
                problems.append("%s: example does not match its schema: %s" % (where, p))

        def walk(node, where):
            if isinstance(node, dict):
                schema = node.get("schema")
                if schema is not None:
                    if "example" in node:
                        check(schema, node["example"], where + ".example")
                    for name, ex in (node.get("examples") or {}).items():
                        ex = self._deref(ex)
                        if isinstance(ex, dict) and "value" in ex:
                            check(schema, ex["value"], "%s.examples.%s" % (where, name))
                for k, v in node.items():
                    walk(v, "%s.%s" % (where, k))
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, "%s[%d]" % (where, i))
        walk(self.doc, "")
        for where, schema in self._schemas():
            self._lint_schema_examples(schema, where, check)

    def _lint_schema_examples(self, schema, where, check):
        if not isinstance(schema, dict):
            return
        bare = {k: v for k, v in schema.items() if k not in ("examples", "example")}
        for i, ex in enumerate(schema.get("examples", []) if isinstance(schema.get("examples"), list) else []):
            check(bare, ex, "%s.examples[%d]" % (where, i))
        if "example" in schema:
            check(bare, schema["example"], where + ".example")
        for k, v in schema.items():
            if k in _ONE:
                self._lint_schema_examples(v, "%s.%s" % (where, k), check)
            elif k in _LIST and isinstance(v, list):
                for i, s in enumerate(v):
                    self._lint_schema_examples(s, "%s.%s[%d]" % (where, k, i), check)
            elif k in _MAP and isinstance(v, dict):
                for name, s in v.items():
                    self._lint_schema_examples(s, "%s.%s.%s" % (where, k, name), check)

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
