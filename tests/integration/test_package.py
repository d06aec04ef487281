"""The Debian package and the service's files: `make deb` builds a package
lintian accepts; it installs, upgrades (keeping the state, whose schema the
service then migrates), removes and purges on a copy of this machine's
/etc, /usr and /var (overlay file systems in a private mount namespace, so
the machine itself is left as it was, even if the test dies); the unit
verifies and its `systemd-analyze security` exposure is at most 2.0; the
man pages pass `mandoc -T lint` and pop3bridge.json(5) documents exactly
the keys `check-config --keys` knows.

The steps inside the namespace run in a child process of this file
(`python3 test_package.py --scratch ...`), which reports each check.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

import harness  # noqa: E402

TIMEOUT = 300
UNIT = os.path.join(harness.ROOT, "config", "debian", "pop3bridge.service")
MAN8 = os.path.join(harness.ROOT, "config", "man", "pop3bridge.8")
MAN5 = os.path.join(harness.ROOT, "config", "man", "pop3bridge.json.5")
V2_SQL = os.path.join(harness.ROOT, "tests", "data", "state", "schema-v2.sql")
DEB = {}



def _run(argv, timeout=120, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=harness.ROOT, **kw)


def _version():
    with open(os.path.join(harness.ROOT, "VERSION")) as f:
        return f.read().strip()


def _deb():
    """Build the package once for the module (make deb)."""
    if "path" not in DEB:
        r = _run(["make", "--no-print-directory", "deb"], timeout=400)
        arch = _run(["dpkg", "--print-architecture"]).stdout.strip()
        path = os.path.join(harness.ROOT, "build", "pop3bridge_%s_%s.deb" % (_version(), arch))
        if r.returncode != 0 or not os.path.exists(path):
            raise AssertionError("make deb failed (exit %d): %s" % (r.returncode, (r.stdout + r.stderr)[-2000:]))
        DEB["path"] = path
        DEB["changes"] = os.path.join(harness.ROOT, "build", "debtree",
                                      "pop3bridge_%s_%s.changes" % (_version(), arch))
    return DEB["path"]


# ---- the package -------------------------------------------------------------------

@harness.timeout(400)
def test_make_deb_lintian_clean():
    """make deb builds build/pop3bridge_<version>_<arch>.deb; lintian reports
    no error and no warning on it or its .changes."""
    deb = _deb()
    r = _run(["lintian", "--info", "--fail-on", "error,warning", deb, DEB["changes"]], timeout=300)
    tags = [l for l in r.stdout.splitlines() if re.match(r"[EW]: ", l)]
    if r.returncode != 0 or tags:
        raise AssertionError("lintian (exit %d): %s" % (r.returncode, "\n".join(tags) or r.stdout[-2000:] + r.stderr[-1000:]))
    listing = _run(["dpkg-deb", "-c", deb]).stdout
    for path in ("./usr/bin/pop3bridge", "./usr/share/pop3bridge/openapi.yaml",
                 "./usr/share/pop3bridge/web/index.html",
                 "./usr/share/doc/pop3bridge/examples/example.json",
                 "./usr/share/man/man8/pop3bridge.8.gz", "./usr/share/man/man5/pop3bridge.json.5.gz",
                 "./lib/systemd/system/pop3bridge.service"):
        if not re.search(r" %s$" % re.escape(path), listing, re.M):
            raise AssertionError("%s is not in the package" % path)


def _repack(deb, version, out_dir):
    """The same package under another version (for the upgrade)."""
    tree = os.path.join(out_dir, "tree")
    shutil.rmtree(tree, ignore_errors=True)
    for argv in (["dpkg-deb", "-R", deb, tree],):
        r = _run(argv)
        if r.returncode:
            raise AssertionError("%s: %s" % (argv, r.stderr))
    ctl = os.path.join(tree, "DEBIAN", "control")
    with open(ctl) as f:
        text = f.read()
    with open(ctl, "w") as f:
        f.write(re.sub(r"(?m)^Version: .*$", "Version: " + version, text))
    old = os.path.join(out_dir, "pop3bridge_%s.deb" % version)
    r = _run(["dpkg-deb", "--root-owner-group", "-b", tree, old])
    if r.returncode:
        raise AssertionError("dpkg-deb -b: %s" % r.stderr)
    return old


@harness.timeout(500)
def test_install_upgrade_remove_purge():
    """dpkg -i (an older version), the unit verifies, a state of schema 2 is
    put in place, dpkg -i (the new version: an upgrade) keeps it and the
    service's binary migrates it, dpkg -r keeps configuration and state,
    dpkg -P removes them and the user: on overlays of /etc, /usr and /var."""
    for tool in ("unshare", "dpkg", "systemd-analyze"):
        if not shutil.which(tool):
            raise AssertionError("%s is needed for this test" % tool)
    deb = _deb()
    had = os.path.exists("/etc/pop3bridge"), os.path.exists("/var/lib/pop3bridge")
    # not under /etc, /usr or /var: the overlays' upper layers must not be inside their lower ones
    work = tempfile.mkdtemp(prefix="p3b-pkg-", dir="/tmp")
    harness.register_cleanup(lambda: shutil.rmtree(work, ignore_errors=True))
    old = _repack(deb, "0.0.1", work)
    r = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable,
                        os.path.abspath(__file__), "--scratch", work, old, deb, V2_SQL],
                       capture_output=True, text=True, timeout=400)
    with open(os.path.join(harness.out_dir(), "scratch.log"), "w") as f:
        f.write(r.stdout + "\n--- stderr\n" + r.stderr)
    if r.returncode != 0:
        raise AssertionError("in the scratch root (exit %d): %s | %s" % (
            r.returncode, " / ".join(r.stdout.splitlines()[-6:]), r.stderr[-1500:]))
    if "all steps passed" not in r.stdout:
        raise AssertionError("the scratch run did not finish: %s" % r.stdout[-1500:])
    # the machine itself is as it was
    harness.eq((os.path.exists("/etc/pop3bridge"), os.path.exists("/var/lib/pop3bridge")), had,
               "/etc/pop3bridge and /var/lib/pop3bridge on the machine, before and after")


# ---- the unit ------------------------------------------------------------------------

def test_unit_security_exposure():
    """systemd-analyze security: the unit's overall exposure is at most 2.0."""
    r = _run(["systemd-analyze", "security", "--offline=true", "--no-pager", UNIT])
    m = re.search(r"Overall exposure level for pop3bridge\.service: (\d+\.\d+)", r.stdout)
    if not m:
        raise AssertionError("no exposure level: %s %s" % (r.stdout[-1500:], r.stderr[-500:]))
    if float(m.group(1)) > 2.0:
        raise AssertionError("exposure %s > 2.0:\n%s" % (m.group(1), r.stdout))
    for setting in ("Type=notify", "ProtectSystem=strict", "StateDirectory=pop3bridge",
                    "NoNewPrivileges=yes", "PrivateTmp=yes", "CapabilityBoundingSet=\n",
                    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "SystemCallFilter=",
                    "LoadCredential=", "WatchdogSec=", "User=pop3bridge"):
        with open(UNIT) as f:
            if setting not in f.read():
                raise AssertionError("the unit lacks %r" % setting)
    with open(UNIT) as f:
        stop = int(re.search(r"(?m)^TimeoutStopSec=(\d+)s$", f.read()).group(1))
    if stop <= 30:
        raise AssertionError("TimeoutStopSec=%ds is not longer than the 30 s drain" % stop)


# ---- the man pages ------------------------------------------------------------------

def test_man_pages_lint():
    """mandoc -T lint: no message at all, except that the pages they refer to
    are not installed on this machine (they are not: the package has them)."""
    for page in (MAN8, MAN5):
        r = _run(["mandoc", "-T", "lint", "-W", "style", page])
        bad = [l for l in (r.stdout + r.stderr).splitlines()
               if l.strip() and "referenced manual not found" not in l
               and "outdated mandoc.db" not in l]
        if bad:
            raise AssertionError("mandoc -T lint %s:\n%s" % (os.path.basename(page), "\n".join(bad)))
        r = _run(["mandoc", "-T", "lint", "-W", "warning", page])
        if r.returncode != 0 or r.stdout.strip() or r.stderr.strip():
            raise AssertionError("mandoc -T lint -W warning %s: %s%s" % (page, r.stdout, r.stderr))


def _man_keys():
    """{key: its .It block's source} of pop3bridge.json(5)."""
    with open(MAN5) as f:
        lines = f.read().splitlines()
    keys, cur = {}, None
    for line in lines:
        m = re.match(r"\.It Cm (\S+)", line)
        if m:
            cur = m.group(1)
            if cur in keys:
                raise AssertionError("pop3bridge.json(5) documents %s twice" % cur)
            keys[cur] = ""
        elif line.startswith((".El", ".Sh")):
            cur = None
        elif cur:
            keys[cur] += line + "\n"
    return keys


def test_man_page_documents_every_key():
    """Every key `check-config --keys` lists appears in pop3bridge.json(5)
    (as `.It Cm KEY`) with its default, and the page documents no other."""
    r = harness.run_cli(["check-config", "--keys"])
    harness.eq(r.code, 0, "check-config --keys")
    known = {}
    for line in r.stdout.splitlines():
        key = line.split(" ", 1)[0]
        m = re.search(r" default (.*)$", line)
        known[key] = m.group(1) if m else None
    documented = _man_keys()
    missing = sorted(set(known) - set(documented))
    extra = sorted(set(documented) - set(known))
    problems = ["%s: known to check-config --keys, missing from config/man/pop3bridge.json.5" % k
                for k in missing]
    problems += ["%s: in config/man/pop3bridge.json.5, unknown to check-config --keys" % k
                 for k in extra]
    for key, default in known.items():
        if key not in documented or default is None:
            continue
        text = documented[key].replace("\\(dq", '"')
        values = re.findall(r'"([^"]*)"', default) or [default]
        for v in values:
            if v not in text:
                problems.append("%s: its default %s is not in its entry of pop3bridge.json(5)" % (key, default))
                break
        if "Default:" not in text:
            problems.append("%s: its entry does not say Default:" % key)
    if problems:
        raise AssertionError("\n".join(problems))
    if len(known) < 50:
        raise AssertionError("check-config --keys listed only %d keys" % len(known))


def test_readme_install_section():
    """The README's "Install as a service" takes five commands from make deb
    to a running, enabled service."""
    with open(os.path.join(harness.ROOT, "README.md")) as f:
        text = f.read()
    m = re.search(r"## Install as a service\n(.*?)\n## ", text, re.S)
    assert m, "no \"## Install as a service\" section in README.md"
    block = re.search(r"```sh\n(.*?)```", m.group(1), re.S)
    assert block, "no sh block in the section"
    cmds = [l for l in block.group(1).splitlines() if l.strip() and not l.lstrip().startswith("#")]
    harness.eq(len(cmds), 5, "commands in the README's install block")
    if not cmds[0].startswith("make deb") or "systemctl enable --now pop3bridge" not in cmds[-1]:
        raise AssertionError("the block goes from make deb to systemctl enable --now: %r" % cmds)


# ---- inside the mount namespace (a child process) -------------------------------------------

def _scratch(work, old, new, v2_sql):
    import grp
    import pwd
    import sqlite3
    import stat

    def step(what):
        print("step: " + what, flush=True)

    def sh(argv, ok=(0,)):
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if p.returncode not in ok:
            raise SystemExit("%s: exit %d\n%s\n%s" % (" ".join(argv), p.returncode, p.stdout, p.stderr))
        return p

    def mode(path, want_mode, want_user, want_group):
        st = os.stat(path)
        got = (stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name)
        if got != (want_mode, want_user, want_group):
            raise SystemExit("%s: %o %s:%s, expected %o %s:%s" % ((path,) + got + (want_mode, want_user, want_group)))

    step("overlays on /etc /usr /var")
    for d in ("/etc", "/usr", "/var"):
        up, wk = os.path.join(work, "up" + d), os.path.join(work, "wk" + d)
        os.makedirs(up)
        os.makedirs(wk)
        sh(["mount", "-t", "overlay", "overlay", "-o",
            "lowerdir=%s,upperdir=%s,workdir=%s" % (d, up, wk), d])
    if os.path.exists("/etc/pop3bridge") or subprocess.run(["getent", "passwd", "pop3bridge"]).returncode == 0:
        raise SystemExit("pop3bridge is already installed on this machine: the test needs a machine without it")

    step("install the older version")
    sh(["dpkg", "-i", old])
    pw = pwd.getpwnam("pop3bridge")
    if pw.pw_uid >= 1000 or pw.pw_shell not in ("/usr/sbin/nologin", "/bin/false"):
        raise SystemExit("pop3bridge is not a system user: %r" % (pw,))
    mode("/etc/pop3bridge", 0o750, "root", "pop3bridge")
    mode("/etc/pop3bridge/secrets", 0o700, "root", "root")
    mode("/var/lib/pop3bridge", 0o700, "pop3bridge", "pop3bridge")
    for f in ("/usr/bin/pop3bridge", "/usr/share/pop3bridge/openapi.yaml",
              "/usr/share/pop3bridge/web/index.html", "/usr/share/doc/pop3bridge/examples/example.json"):
        if not os.path.isfile(f):
            raise SystemExit("%s is not installed" % f)
    if not os.path.islink("/etc/systemd/system/multi-user.target.wants/pop3bridge.service"):
        raise SystemExit("the service is not enabled")
    out = sh(["/usr/bin/pop3bridge", "--version"]).stdout
    if not out.startswith("pop3bridge "):
        raise SystemExit("pop3bridge --version: %r" % out)

    step("systemd-analyze verify")
    p = sh(["systemd-analyze", "verify", "/lib/systemd/system/pop3bridge.service"], ok=(0, 1))
    if p.returncode != 0 or p.stdout.strip() or p.stderr.strip():
        raise SystemExit("systemd-analyze verify: exit %d: %s %s" % (p.returncode, p.stdout, p.stderr))

    step("configuration and a state of schema 2")
    with open("/etc/pop3bridge/config.json", "w") as f:
        f.write('{ "state_dir": "/var/lib/pop3bridge", "log_format": "json",\n'
                '  "accounts": [], "webhooks": [] }\n')
    os.chown("/etc/pop3bridge/config.json", 0, grp.getgrnam("pop3bridge").gr_gid)
    os.chmod("/etc/pop3bridge/config.json", 0o640)
    db = "/var/lib/pop3bridge/pop3bridge.db"
    con = sqlite3.connect(db)
    with open(v2_sql) as f:
        con.executescript(f.read())
    con.close()
    os.chown(db, pw.pw_uid, pw.pw_gid)
    os.chmod(db, 0o600)
    with open(db, "rb") as f:
        before = f.read()

    step("upgrade to the new version")
    sh(["dpkg", "-i", new])
    with open(db, "rb") as f:
        if f.read() != before:
            raise SystemExit("the upgrade changed the state")
    if pwd.getpwnam("pop3bridge").pw_uid != pw.pw_uid:
        raise SystemExit("the upgrade changed the user")
    mode("/etc/pop3bridge", 0o750, "root", "pop3bridge")
    mode("/var/lib/pop3bridge", 0o700, "pop3bridge", "pop3bridge")
    mode("/etc/pop3bridge/config.json", 0o640, "root", "pop3bridge")

    step("the service's binary, as the service's user, migrates the state")
    p = sh(["setpriv", "--reuid", "pop3bridge", "--regid", "pop3bridge", "--init-groups",
            "/usr/bin/pop3bridge", "run", "--config", "/etc/pop3bridge/config.json", "--once"])
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    version = con.execute("PRAGMA user_version").fetchone()[0]
    row = con.execute("SELECT m.subject, b.raw FROM messages m JOIN bodies b ON b.message_id = m.id"
                      " WHERE m.uidl = 'u1'").fetchone()
    con.close()
    if version != harness.schema_version() or row != ("Old", b"ABC"):
        raise SystemExit("after the upgrade: schema %r, message %r" % (version, row))
    mode(db, 0o600, "pop3bridge", "pop3bridge")
    p = sh(["setpriv", "--reuid", "pop3bridge", "--regid", "pop3bridge", "--init-groups",
            "/usr/bin/pop3bridge", "export", "--config", "/etc/pop3bridge/config.json", "acc",
            "--maildir", "/var/lib/pop3bridge/export"])
    files = os.listdir("/var/lib/pop3bridge/export/new")
    with open(os.path.join("/var/lib/pop3bridge/export/new", files[0]), "rb") as f:
        if len(files) != 1 or f.read() != b"ABC":
            raise SystemExit("export after the upgrade: %r" % files)

    step("remove")
    sh(["dpkg", "-r", "pop3bridge"])
    if os.path.exists("/usr/bin/pop3bridge"):
        raise SystemExit("the binary is still there after remove")
    for kept in ("/etc/pop3bridge/config.json", db):
        if not os.path.exists(kept):
            raise SystemExit("remove deleted %s" % kept)
    if subprocess.run(["getent", "passwd", "pop3bridge"], capture_output=True).returncode != 0:
        raise SystemExit("remove deleted the user")

    step("purge")
    sh(["dpkg", "-P", "pop3bridge"])
    for gone in ("/etc/pop3bridge", "/var/lib/pop3bridge",
                 "/etc/systemd/system/multi-user.target.wants/pop3bridge.service"):
        if os.path.lexists(gone):
            raise SystemExit("%s is still there after purge" % gone)
    for db_name in ("passwd", "group"):
        if subprocess.run(["getent", db_name, "pop3bridge"], capture_output=True).returncode == 0:
            raise SystemExit("the %s entry is still there after purge" % db_name)
    st = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "pop3bridge"], capture_output=True, text=True)
    if "installed" in st.stdout and "not-installed" not in st.stdout:
        raise SystemExit("dpkg still knows the package: %r" % st.stdout)
    print("all steps passed", flush=True)


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "--scratch":
    _scratch(*sys.argv[2:])
