from fakeface.cli.main import main

raise SystemExit(main())
