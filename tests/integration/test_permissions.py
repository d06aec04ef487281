"""File permissions (include/perms.h): the bridge refuses a configuration,
secret file or state_dir that other users can read, with one line that
names the file, its mode and owner and the fix; --allow-insecure-permissions
turns the refusal into a warning.  `run` exits 2 (CLI_EXIT_USAGE) and
`check-config` 1 (CONFIG_EXIT_INVALID), as for any invalid configuration.
No server is needed: a configuration without accounts or webhooks, and one
account whose password comes from a file."""

import grp
import os
import re
import secrets
import stat

import harness
import dovecot

TIMEOUT = 60
RUN_EXIT_INVALID = 2       # CLI_EXIT_USAGE
CHECK_EXIT_INVALID = 1     # CONFIG_EXIT_INVALID
NOBODY = 65534             # a user and group this test's process is not


def _setup(name, with_password=False):
    """A directory with a 0600 configuration (and a 0600 password file);
    the paths and the password."""
    d = harness.out_dir(name)
    cfg = {"state_dir": os.path.join(d, "state"), "webhooks": [], "accounts": [],
           "api": {"listen": "127.0.0.1:%d" % dovecot.free_port()}}
    pw = "pw-" + secrets.token_hex(12)
    pw_path = os.path.join(d, "pop3.pw")
    if with_password:
        harness.write_private(pw_path, pw + "\n")
        cfg["accounts"] = [{"name": "a", "host": "127.0.0.1", "port": dovecot.free_port(),
                            "tls": "none", "allow_plaintext": True, "auth": ["user"],
                            "username": "u", "password_file": pw_path, "poll_interval": "1h"}]
    path = os.path.join(d, "config.json")
    harness.write_config(path, cfg)
    return path, pw_path, pw, cfg


def _refused(path, what, pattern, pw=None, args=()):
    """`run --once` exits 2 with exactly one line, `check-config` 1 with that
    line and the count; the line names `what` and matches pattern."""
    r = harness.run_cli(["run", "--config", path, "--once"] + list(args), timeout=20)
    lines = r.stderr.splitlines()
    if r.code != RUN_EXIT_INVALID or len(lines) != 1:
        raise AssertionError("run: expected exit 2 and one line: " + r.describe())
    line = lines[0]
    if what not in line or not re.search(pattern, line):
        raise AssertionError("run: %r does not name %s or match /%s/" % (line, what, pattern))
    c = harness.run_cli(["check-config", path], timeout=20)
    harness.eq(c.code, CHECK_EXIT_INVALID, "check-config exit code")
    harness.eq(c.stderr.splitlines(), [line, "%s: 1 problem" % path], "check-config output")
    if pw:
        harness.check_no_secret(r, pw)
        harness.check_no_secret(c, pw)
    return line


def test_world_readable_config_refused_then_allowed():
    path, _, _, _ = _setup("world")
    os.chmod(path, 0o644)
    line = _refused(path, path, r"^%s: %s is readable by every user \(mode 0644, owner root:root\): "
                    r"chmod 640 %s, or accept it with --allow-insecure-permissions$"
                    % ((re.escape(path),) * 3))
    # the override: it runs, with one warning naming the file
    r = harness.run_cli(["run", "--config", path, "--once", "--allow-insecure-permissions"], timeout=30)
    harness.check_ok(r)
    warn = [ln for ln in r.stderr.splitlines() if "event=insecure_permissions" in ln]
    harness.eq(len(warn), 1, "warning lines")
    for want in ('level=warn', 'path="%s"' % path, 'problem="is readable by every user"', "mode=0644",
                 'fix="chmod 640 %s"' % path, "accepted_with=--allow-insecure-permissions"):
        if want not in warn[0]:
            raise AssertionError("no %r in the warning %r" % (want, warn[0]))
    # the option may come first too, and check-config takes it
    c = harness.run_cli(["--allow-insecure-permissions", "check-config", path], timeout=20)
    harness.check_ok(c)
    if "event=insecure_permissions" not in c.stderr:
        raise AssertionError("check-config: no warning: " + c.describe())
    assert line  # the refusal was one line


def test_group_writable_config_refused():
    path, _, _, _ = _setup("gwrite")
    os.chmod(path, 0o660)
    _refused(path, path, r"is writable by its group \(mode 0660, owner root:root\): chmod 640 ")


def test_symlinked_config_checks_its_target():
    path, _, _, _ = _setup("symlink")
    link = path + ".link"
    os.symlink(path, link)
    os.chmod(path, 0o666)
    _refused(link, link, r"^%s: %s \(a symlink; its target %s is checked\) is writable by every user"
             % (re.escape(link), re.escape(link), re.escape(path)))


def test_secret_readable_by_a_foreign_group_refused():
    """0640 pop3.pw owned by nobody:nogroup: its group is not ours (nor is
    it root's own file), so other users may read the password."""
    if os.geteuid() != 0 or NOBODY in os.getgroups() or os.getegid() == NOBODY:
        raise AssertionError("this test runs as root, as the suite does")
    path, pw_path, pw, _ = _setup("foreign", with_password=True)
    os.chown(pw_path, NOBODY, NOBODY)
    os.chmod(pw_path, 0o640)
    group = grp.getgrgid(NOBODY).gr_name
    _refused(path, pw_path, r"^%s: accounts\[0\]\.password_file: %s is readable by its group, which "
             r"this process is not in \(mode 0640, owner [^:]+:%s\): chmod 600 %s, or accept it"
             % (re.escape(path), re.escape(pw_path), re.escape(group), re.escape(pw_path)), pw=pw)


def test_secret_readable_by_our_group_accepted():
    """0640 pop3.pw owned by another user, in this process's group: the
    packaged layout (files 0640 root:pop3bridge read by pop3bridge)."""
    path, pw_path, pw, _ = _setup("owngroup", with_password=True)
    os.chown(pw_path, NOBODY, os.getegid())
    os.chmod(pw_path, 0o640)
    c = harness.run_cli(["check-config", path], timeout=20)
    harness.check_ok(c)
    harness.check_no_secret(c, pw)
    if "insecure" in c.stderr:
        raise AssertionError("a warning for an accepted file: " + c.describe())
    # and the same file readable by every user is not
    os.chmod(pw_path, 0o644)
    _refused(path, pw_path, r"accounts\[0\]\.password_file: .* is readable by every user", pw=pw)


def test_credentials_directory_0440_accepted():
    """systemd's LoadCredential= files: 0440 (owned by root, an ACL for the
    service) are accepted whatever their group; 0444 is not."""
    path, _, pw, cfg = _setup("creds", with_password=True)
    creds = os.path.join(harness.out_dir("creds"), "credentials")
    os.mkdir(creds, 0o500)
    cred = os.path.join(creds, "pop3.pw")
    harness.write_private(cred, pw + "\n")
    os.chown(cred, 0, NOBODY)
    os.chmod(cred, 0o440)
    cfg["accounts"][0]["password_file"] = "${CREDENTIALS_DIRECTORY}/pop3.pw"
    harness.write_config(path, cfg)
    env = {"CREDENTIALS_DIRECTORY": creds}
    c = harness.run_cli(["check-config", path], env=env, timeout=20)
    harness.check_ok(c)
    os.chmod(cred, 0o444)
    c = harness.run_cli(["check-config", path], env=env, timeout=20)
    harness.eq(c.code, CHECK_EXIT_INVALID, "check-config exit code, 0444 credential")
    if "%s is readable by every user (mode 0444" % cred not in c.stderr:
        raise AssertionError("0444 credential: " + c.describe())
    harness.check_no_secret(c, pw)


def test_open_state_dir_refused_and_created_private():
    path, _, _, cfg = _setup("statedir")
    state = cfg["state_dir"]
    os.mkdir(state)
    os.chmod(state, 0o755)
    _refused(path, state, r"^%s: state_dir: %s is open to every user, and it holds the mail "
             r"\(mode 0755, owner root:root\): chmod 700 %s, or accept it with "
             r"--allow-insecure-permissions$" % (re.escape(path), re.escape(state), re.escape(state)))
    if os.path.exists(os.path.join(state, "pop3bridge.db")):
        raise AssertionError("refused, yet the database was made")
    # a state_dir the bridge makes itself is 0700 and accepted on the next start
    os.rmdir(state)
    harness.check_ok(harness.run_cli(["run", "--config", path, "--once"], timeout=30))
    harness.eq(stat.S_IMODE(os.stat(state).st_mode), 0o700, "mode of the state_dir made")
    harness.check_ok(harness.run_cli(["run", "--config", path, "--once"], timeout=30))


def test_probe_and_fetch_check_secret_files():
    """`probe` and `fetch` read --password-file and --oauth2-token-file under
    the same rule as `run`: a file every user may read is refused (exit 2,
    one line, nothing sent anywhere); the override accepts it with one
    warning, and the command goes on (here to a port nobody listens on)."""
    d = harness.out_dir("cli")
    pw = "pw-" + secrets.token_hex(12)
    pw_path = os.path.join(d, "pop3.pw")
    harness.write_private(pw_path, pw + "\n")
    os.chmod(pw_path, 0o644)
    url = "pop3://u@127.0.0.1:%d" % dovecot.free_port()
    maildir = os.path.join(d, "Maildir")
    base = ["--tls", "none", "--allow-plaintext", "--timeout", "5"]
    for cmd, opt in (("probe", "--password-file"), ("fetch", "--password-file"),
                     ("probe", "--oauth2-token-file")):
        args = [cmd] + base + [opt, pw_path, url] + ([maildir] if cmd == "fetch" else [])
        r = harness.run_cli(args, timeout=20)
        what = "password" if opt == "--password-file" else "OAuth2 token"
        line = harness.check_failure(r, RUN_EXIT_INVALID)
        want = (r"^pop3bridge: Usage: %s file: %s is readable by every user \(mode 0644, owner "
                r"root:root\): chmod 6[04]0 %s, or accept it with --allow-insecure-permissions$"
                % (what, re.escape(pw_path), re.escape(pw_path)))
        if not re.search(want, line):
            raise AssertionError("%s %s: %r does not match /%s/" % (cmd, opt, line, want))
        harness.check_no_secret(r, pw)
        if cmd == "fetch" and os.path.exists(maildir):
            raise AssertionError("fetch refused, yet made the Maildir")
        # the override: one warning, then the connection is tried (and refused)
        r = harness.run_cli(args + ["--allow-insecure-permissions"], timeout=20)
        harness.eq(r.code, 3, "%s %s with the override: exit code (connection refused): %s"
                   % (cmd, opt, r.describe()))
        warn = [ln for ln in r.stderr.splitlines() if "event=insecure_permissions" in ln]
        harness.eq(len(warn), 1, "warning lines")
        if 'path="%s"' % pw_path not in warn[0]:
            raise AssertionError("the warning does not name the file: %r" % warn[0])
        harness.check_no_secret(r, pw)
    # 0600: no refusal, no warning
    os.chmod(pw_path, 0o600)
    r = harness.run_cli(["probe"] + base + ["--password-file", pw_path, url], timeout=20)
    harness.eq(r.code, 3, "probe with a 0600 password file: exit code: " + r.describe())
    if "insecure" in r.stderr:
        raise AssertionError("a warning for a private file: " + r.describe())
