#!/usr/bin/env python3
"""The man pages slipstream-trace(1) and slipstreamd(8) render without warnings and cover what
--help lists: every option, and every environment variable the code reads (getenv).

The pages are generated at build time (packaging/CMakeLists.txt) from the prose in
packaging/man/*.in and the sections the option parsers print with --help-man.
"""

import os
import re
import shutil
import subprocess
import unittest

import harness

MAN_DIR = os.path.join(harness.BUILD, "packaging", "man")
PAGES = {"slipstream-trace": ("1", harness.TRACE_BIN),
         "slipstreamd": ("8", os.path.join(harness.BUILD, "matcher", "slipstreamd"))}
CODE_DIRS = ("base", "matcher", "supervisor", "tracer", "fdinject", "preload-fallback")


def help_options(binary):
    """The options in the "Options:" part of --help: ["-h", "--help", "--trace", ...]."""
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    part = out.split("\nOptions:\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"(?:^|[ ,])(--?[A-Za-z][A-Za-z-]*)", part, re.M)


def getenv_names():
    """Environment variables the C/C++ code reads, with the preload ABI's names resolved."""
    names = set()
    for d in CODE_DIRS:
        for root, _, files in os.walk(os.path.join(harness.SOURCE, d)):
            for name in files:
                if not name.endswith((".c", ".cc", ".h")) or name.endswith("_test.cc"):
                    continue
                with open(os.path.join(root, name)) as f:
                    text = f.read()
                names.update(re.findall(r'getenv\("([A-Z_]+)"\)', text))
                names.update(re.findall(r'#define SLIPSTREAM_ENV_\w+ "([A-Z_]+)"', text))
    return names


class ManPages(unittest.TestCase):

    def render(self, page, section, tool):
        path = os.path.join(MAN_DIR, f"{page}.{section}")
        self.assertTrue(os.path.exists(path + ".gz"), f"{path}.gz not built")
        if tool == "groff":
            cmd = ["groff", "-ww", "-man", "-Tutf8", path]
        else:
            cmd = ["man", "--warnings", "-l", path + ".gz"]
        env = dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat", LC_ALL="C.UTF-8")
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stderr, "", f"{tool} warnings for {page}({section})")
        # Rendered text: undo hyphenation at line ends and the Unicode hyphen, for searching.
        text = out.stdout.replace("\u2010\n", "").replace("\u2010", "-")
        return re.sub(r"-\n\s+", "-", re.sub(r"[\b].|.[\b]", "", text))

    def test_render_without_warnings_and_cover_every_option(self):
        tools = ["groff"] + (["man"] if shutil.which("man") else [])
        for page, (section, binary) in PAGES.items():
            for tool in tools:
                with self.subTest(page=page, tool=tool):
                    text = self.render(page, section, tool)
                    self.assertNotIn("@", text.split("\n")[-2], "unreplaced @VAR@ in the footer")
                    options = help_options(binary)
                    self.assertGreaterEqual(len(options), 8, options)
                    for option in options:
                        self.assertRegex(text, rf"(?m)^\s+(?:-\w, )?{re.escape(option)}\b",
                                         f"{option} (from --help) is not an OPTIONS entry")
                    for section_name in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS",
                                         "EXIT STATUS", "ENVIRONMENT", "FILES",
                                         "KERNEL REQUIREMENTS", "SEE ALSO"):
                        self.assertRegex(text, rf"(?m)^{section_name}$")

    def test_every_environment_variable_is_documented(self):
        names = getenv_names()
        for expected in ("SLIPSTREAM_RUNTIME_DIR", "XDG_RUNTIME_DIR", "SLIPSTREAM_LOG",
                         "SLIPSTREAMD", "LISTEN_PID", "LISTEN_FDS"):
            self.assertIn(expected, names, "the scan of getenv() calls missed one")
        trace = self.render("slipstream-trace", "1", "groff")
        daemon = self.render("slipstreamd", "8", "groff")
        for name in sorted(names):
            self.assertIn(name, trace + daemon, f"{name} is read by the code but not documented")
        for name in ("SLIPSTREAM_RUNTIME_DIR", "XDG_RUNTIME_DIR", "SLIPSTREAM_LOG"):
            self.assertIn(name, trace)
            self.assertIn(name, daemon)

    def test_help_prints_the_same_environment_and_exit_status(self):
        for page, (section, binary) in PAGES.items():
            help_text = subprocess.run([binary, "--help"], capture_output=True, text=True,
                                       check=True).stdout
            man = self.render(page, section, "groff")
            env_part = man.split("\nENVIRONMENT\n", 1)[1].split("\n\n\n", 1)[0]
            for name in re.findall(r"(?m)^       ([A-Z_][A-Z_, ]+)$", env_part):
                self.assertIn(name.strip(), help_text, f"{page}: {name} in man, not --help")

    def test_version_names_the_commit(self):
        for page, (_, binary) in PAGES.items():
            out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                 check=True).stdout
            m = re.fullmatch(rf"{page} (\S+) \(commit (\S+)\)\n", out)
            self.assertIsNotNone(m, out)
            version, commit = m.groups()
            head = subprocess.run(["git", "-C", harness.SOURCE, "rev-parse", "HEAD"],
                                  capture_output=True, text=True)
            if head.returncode != 0:
                self.assertEqual(commit, "unknown")
                continue
            # scripts/build reconfigures on every run, so the build names the checked-out commit.
            self.assertEqual(commit, head.stdout.strip())
            self.assertRegex(version, r"^\d+\.\d+\.\d+(~git\d{8}\.[0-9a-f]{7,})?(\+dirty)?$")
            if "~git" in version:  # not the release tag: the version names the commit
                self.assertIn(commit[:7], version)


if __name__ == "__main__":
    harness.main()
