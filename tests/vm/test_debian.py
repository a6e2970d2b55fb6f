"""Resolving a suite's kernel ABI from Packages text (no network)."""

import pytest

from zaptrace.vm import debian
from zaptrace.vm.errors import VMError

PACKAGES = """\
Package: linux-headers-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Installed-Size: 13
Depends: linux-headers-6.1.0-56-amd64 (= 6.1.192-2)
Description: Header files for Linux amd64 configuration (meta-package)
 This package depends on the architecture-specific header files for the
 latest Linux kernel amd64 configuration.

Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Installed-Size: 13
Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)
Description: Linux for 64-bit PCs (meta-package)
 This package depends on the latest Linux kernel and modules for use on
 PCs with AMD64, Intel 64 or VIA Nano processors.
 .
 Continuation lines with: colons do not start fields.

Package: linux-image-6.1.0-56-amd64
Version: 6.1.192-2
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
"""


def test_parse_stanzas():
    stanzas = debian.parse_stanzas(PACKAGES)
    assert [s["Package"] for s in stanzas] == [
        "linux-headers-amd64", "linux-image-amd64", "linux-image-6.1.0-56-amd64"]
    desc = stanzas[1]["Description"]
    assert desc.startswith("Linux for 64-bit PCs (meta-package)\nThis package depends")
    assert desc.endswith("Continuation lines with: colons do not start fields.")
    assert "Continuation lines with" not in stanzas[1]  # not a field


def test_kernel_packages_bookworm():
    meta = [s for s in debian.parse_stanzas(PACKAGES) if s["Package"] == "linux-image-amd64"][0]
    pkgs = debian.kernel_packages(meta)
    assert pkgs.abi == "6.1.0-56"
    assert pkgs.kver == "6.1.0-56-amd64"
    assert pkgs.version == "6.1.192-2"
    assert pkgs.image == "linux-image-6.1.0-56-amd64"
    assert pkgs.headers == ["linux-headers-6.1.0-56-amd64", "linux-headers-6.1.0-56-common"]


def test_kernel_packages_trixie_abi_with_plus():
    meta = {"Package": "linux-image-amd64", "Version": "6.12.117-1",
            "Depends": "linux-image-6.12.117+deb13-amd64 (= 6.12.117-1)"}
    pkgs = debian.kernel_packages(meta)
    assert pkgs.kver == "6.12.117+deb13-amd64"
    assert pkgs.headers == ["linux-headers-6.12.117+deb13-amd64", "linux-headers-6.12.117+deb13-common"]


def test_kernel_packages_skips_unsigned_alternative():
    meta = {"Package": "linux-image-amd64", "Version": "5.10.223-1",
            "Depends": "linux-image-5.10.0-32-amd64-unsigned (= 5.10.223-1) | "
                       "linux-image-5.10.0-32-amd64:amd64 (= 5.10.223-1)"}
    assert debian.kernel_packages(meta).kver == "5.10.0-32-amd64"


@pytest.mark.parametrize("meta", [
    {"Package": "linux-image-amd64", "Version": "1", "Depends": "kmod"},
    {"Package": "linux-headers-amd64", "Depends": "linux-image-6.1.0-56-amd64"},
])
def test_kernel_packages_rejects(meta):
    with pytest.raises(VMError):
        debian.kernel_packages(meta)


def test_suites():
    # the table itself is checked in test_labels.py; these rows are what the notes measured
    assert {"5.10": "bullseye", "6.1": "bookworm", "6.12": "trixie"}.items() <= debian.SUITES.items()
    assert {"bullseye", "bookworm", "trixie"} <= set(debian.SECURITY_SUITES)


@pytest.mark.parametrize("abi, label, ok", [
    ("7.2.13+deb14", "7.2", True), ("7.3", "7.3", True), ("6.12.118+deb13", "6.12", True),
    ("6.1.0-56", "6.1", True), ("7.3", "7.2", False), ("7.20.1", "7.2", False), ("6.12.1", "6.1", False),
])
def test_abi_matches_label(abi, label, ok):
    pkgs = debian.KernelPackages(abi, abi + "-amd64", "1", "linux-image-%s-amd64" % abi, [])
    assert pkgs.matches(label) is ok


def test_split_packages_since_6_19():
    # sid's 7.2: the image package is empty and depends on binary, modules and base
    meta = {"Package": "linux-image-amd64", "Version": "7.2.13-1",
            "Depends": "linux-base-amd64 (= 7.2.13-1), linux-image-7.2.13+deb14-amd64 (= 7.2.13-1)"}
    pkgs = debian.kernel_packages(meta)
    image = {"Package": pkgs.image, "Depends": (
        "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, "
        "linux-base-7.2.13+deb14-amd64 (= 7.2.13-1), linux-binary-7.2.13+deb14-amd64 (= 7.2.13-1), "
        "linux-modules-7.2.13+deb14-amd64 (= 7.2.13-1)")}
    split = debian.split_packages(pkgs, image)
    assert split.image == "linux-binary-7.2.13+deb14-amd64"
    assert split.parts == ("linux-modules-7.2.13+deb14-amd64", "linux-base-7.2.13+deb14-amd64")
    assert split.headers == pkgs.headers
    # 6.12: one image package, nothing more
    old = debian.kernel_packages({"Package": "linux-image-amd64", "Version": "6.12.117-1",
                                  "Depends": "linux-image-6.12.117+deb13-amd64 (= 6.12.117-1)"})
    assert debian.split_packages(old, {"Package": old.image, "Depends": "kmod, linux-base"}) == old
