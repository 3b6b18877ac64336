from geofence.cli import main

raise SystemExit(main())
