"""Evidence about a build beyond its outputs: where layers run, what the toolkit estimated.
It reads what the build and the judge produced and adds to a result; it never decides an outcome
the checks did not decide."""
