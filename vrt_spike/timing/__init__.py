"""Per-stage timing of training steps: StageTimer (timer), its table (table), the Lightning
TimingCallback (callback), the console view (console) and the bottleneck report (report).

Import the submodules directly; this package imports nothing heavy on its own.
"""
