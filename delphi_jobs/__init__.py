"""delphi-jobs: the job daemon of the Polis Delphi analysis system."""
