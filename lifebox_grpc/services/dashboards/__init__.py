"""DashboardService (issue 17): quick-view pages, shares, widgets, layouts, page data."""
