import os

from tetrahost.policy import canonicalize_path


def test_merged_usr(merged_usr_root):
    assert canonicalize_path("/bin/su", merged_usr_root) == "/usr/bin/su"
    assert canonicalize_path("/sbin/nothing", merged_usr_root) == "/usr/sbin/nothing"


def test_missing_file_resolved_through_existing_directory(merged_usr_root):
    assert canonicalize_path("/tmp/xmrig", merged_usr_root) == "/tmp/xmrig"
    assert canonicalize_path("/bin/xmrig", merged_usr_root) == "/usr/bin/xmrig"
    assert canonicalize_path("/nonexistent/dir/file", merged_usr_root) == "/nonexistent/dir/file"


def test_absolute_link_target_is_taken_inside_root(merged_usr_root):
    assert canonicalize_path("/var/run/secrets/x", merged_usr_root) == "/run/secrets/x"


def test_file_symlink_is_followed_and_trailing_slash_kept(merged_usr_root):
    assert canonicalize_path("/bin/python3", merged_usr_root) == "/usr/bin/python3.11"
    assert canonicalize_path("/bin/", merged_usr_root) == "/usr/bin/"
    assert canonicalize_path("/etc/", merged_usr_root) == "/etc/"


def test_dot_dot_after_symlink_follows_the_kernel(merged_usr_root):
    # the kernel resolves /bin first, so /bin/.. is /usr
    assert canonicalize_path("/bin/../etc", merged_usr_root) == "/usr/etc"


def test_symlink_loop_terminates(tmp_path):
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    assert canonicalize_path("/a/x", str(tmp_path)).endswith("/x")
