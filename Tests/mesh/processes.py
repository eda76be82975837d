"""What the mesh test modules do alike with their node processes."""
import signal
import subprocess


def stop_all(procs):
    """SIGTERM every process, then wait up to 5 s each; kill those still running."""
    for p in procs.values():
        p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
