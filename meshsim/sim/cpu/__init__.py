"""The CPU of a node as Linux runs it: the fair scheduler and the cgroups of containers."""
