"""Interactive feed simulation: a trained run driven as a feed over the fully observed matrix.

Offline ranking cannot show what a sequence model is for, reacting within a session. Here the
policy recommends, the simulated user watches (with the watch ratio small_matrix or the
synthetic world's taste model says), the event goes back into the policy through the same
feed code the server uses, and the user stays or leaves. This layer sits beside serving/: it
may import serving.feed, models and runs; nothing below it imports it.
"""
