#!/usr/bin/env python3
"""Runs scdoc on one page and tidies its roff so that `mandoc -T lint` is silent.

scdoc 1.11 writes a paragraph macro (.P) after every block, including right after a
section heading, before .RE and before the next heading, and keeps the source's long
lines; mandoc rightly flags both. This moves or drops the redundant .P lines, upper-cases
the title as man pages do, and folds filled text lines at spaces to at most 79 bytes.
Nothing in no-fill blocks (.nf ... .fi) is touched.

Usage: scdoc-man.py SCDOC INPUT.scd OUTPUT
"""
import subprocess
import sys

WIDTH = 79


def fold(line):
    """Splits a filled text line at spaces; a piece that would start a request is
    protected with a zero-width escape."""
    out, cur = [], ""
    for word in line.split(" "):
        cand = word if not cur else cur + " " + word
        if cur and len(cand.encode()) > WIDTH:
            out.append(cur)
            cur = word
        else:
            cur = cand
    out.append(cur)
    return [p if not p.startswith((".", "'")) or i == 0 else "\\&" + p
            for i, p in enumerate(out)]


def tidy(roff):
    lines = roff.split("\n")
    res = []
    nofill = False
    for line in lines:
        if line.startswith(".nf"):
            nofill = True
        elif line.startswith(".fi"):
            nofill = False
        if nofill:
            res.append(line)
            continue
        if line.startswith(".TH "):
            parts = line.split(" ", 2)
            line = " ".join([parts[0], parts[1].upper()] + parts[2:])
        if line == ".P":
            # After a heading, another paragraph macro, or at the start: redundant.
            if res and (res[-1].startswith((".SH", ".SS", ".TH")) or res[-1] == ".P"):
                continue
        if line.startswith((".SH", ".SS", ".RE")) and res and res[-1] == ".P":
            # A paragraph break right before a heading or the end of an indented
            # block is empty: drop it, and start the paragraph after .RE instead.
            res.pop()
            res.append(line)
            if line.startswith(".RE"):
                res.append(".P")
            continue
        if not line.startswith((".", "'")) and len(line.encode()) > WIDTH:
            res.extend(fold(line))
            continue
        res.append(line)
    # A paragraph macro right before a heading may have been re-added after .RE.
    final = []
    for line in res:
        if line.startswith((".SH", ".SS")) and final and final[-1] == ".P":
            final.pop()
        final.append(line)
    while final and final[-1] in (".P", ""):
        final.pop()
    return "\n".join(final) + "\n"


def main():
    scdoc, src, dst = sys.argv[1:4]
    with open(src, "rb") as f:
        proc = subprocess.run([scdoc], stdin=f, capture_output=True)
    if proc.returncode != 0:
        sys.exit(f"{src}: {proc.stderr.decode(errors='replace').strip()}")
    roff = proc.stdout
    with open(dst, "w", encoding="utf-8") as f:
        f.write(tidy(roff.decode("utf-8")))


if __name__ == "__main__":
    main()
