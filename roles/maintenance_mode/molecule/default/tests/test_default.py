"""Host state after the maintenance_mode role ran (testinfra): the new flag is on, the old one is off."""

# ruff: noqa: S101  (testinfra checks are asserts)

import os

WEB = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "web")


def test_flag_on_with_message_and_mode(host):
    flag = host.file(os.path.join(WEB, "site", "maintenance.flag"))
    assert flag.exists and flag.is_file
    assert flag.mode == 0o644
    assert flag.content_string == "Molecule window: back soon.\n"
    assert host.file(os.path.join(WEB, "site")).is_directory


def test_flag_left_on_was_removed(host):
    assert not host.file(os.path.join(WEB, "old", "maintenance.flag")).exists
    assert host.file(os.path.join(WEB, "old")).is_directory
