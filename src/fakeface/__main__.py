from fakeface.cli import main

raise SystemExit(main())
