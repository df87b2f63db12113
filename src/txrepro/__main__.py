from txrepro.cli import main

raise SystemExit(main())
