"""Built-in reference tables of the resort data generator.

Names, places and postcode ranges are compact but real: cities carry the postcode range
they actually use, so that address standardisation downstream sees plausible values.
The resort's own outlets, shops, products and room types are invented.
"""

# The tables stay in compact rows; one value per line would make them ten times as long.
# fmt: off

# Share of guests by home country; the resort sits in southern Germany.
COUNTRY_WEIGHTS = (("DE", 80.0), ("AT", 7.0), ("CH", 5.0), ("NL", 4.0), ("GB", 2.0), ("DK", 1.0), ("PL", 1.0))

LANGUAGE_BY_COUNTRY = {"DE": "de", "AT": "de", "CH": "de", "NL": "nl", "GB": "en", "DK": "da", "PL": "pl"}
LANGUAGE_BY_CITY = {"Genève": "fr", "Lausanne": "fr", "Lugano": "it"}

# (city, lowest postcode, highest postcode, weight); PL and NL ranges are the numeric part.
CITIES = {
    "DE": (
        ("Berlin", 10115, 14199, 36), ("Hamburg", 20095, 22769, 18), ("München", 80331, 81929, 15),
        ("Köln", 50667, 51149, 11), ("Frankfurt am Main", 60306, 60599, 8), ("Stuttgart", 70173, 70629, 6),
        ("Düsseldorf", 40210, 40629, 6), ("Dortmund", 44135, 44388, 6), ("Essen", 45127, 45359, 6),
        ("Leipzig", 4103, 4357, 6), ("Bremen", 28195, 28779, 6), ("Dresden", 1067, 1328, 6),
        ("Hannover", 30159, 30669, 5), ("Nürnberg", 90402, 90491, 5), ("Duisburg", 47051, 47279, 5),
        ("Bochum", 44787, 44894, 4), ("Wuppertal", 42103, 42399, 4), ("Bielefeld", 33602, 33739, 3),
        ("Bonn", 53111, 53229, 3), ("Münster", 48143, 48167, 3), ("Mannheim", 68159, 68309, 3),
        ("Karlsruhe", 76131, 76229, 3), ("Augsburg", 86150, 86199, 3), ("Wiesbaden", 65183, 65207, 3),
        ("Mönchengladbach", 41061, 41239, 3), ("Aachen", 52062, 52080, 2), ("Braunschweig", 38100, 38126, 2),
        ("Kiel", 24103, 24159, 2), ("Chemnitz", 9111, 9247, 2), ("Halle (Saale)", 6108, 6132, 2),
        ("Magdeburg", 39104, 39130, 2), ("Freiburg im Breisgau", 79098, 79117, 2), ("Mainz", 55116, 55131, 2),
        ("Lübeck", 23552, 23570, 2), ("Erfurt", 99084, 99099, 2), ("Rostock", 18055, 18147, 2),
        ("Kassel", 34117, 34134, 2), ("Osnabrück", 49074, 49090, 2), ("Saarbrücken", 66111, 66133, 2),
        ("Würzburg", 97070, 97084, 1), ("Regensburg", 93047, 93059, 1), ("Göttingen", 37073, 37085, 1),
        ("Ulm", 89073, 89081, 1), ("Heidelberg", 69115, 69126, 1), ("Potsdam", 14467, 14482, 1),
        ("Oldenburg", 26121, 26135, 1), ("Garmisch-Partenkirchen", 82467, 82467, 1),
        ("Tübingen", 72070, 72076, 1),
        ("Konstanz", 78462, 78467, 1), ("Lüneburg", 21335, 21339, 1), ("Fürth", 90762, 90768, 1),
        ("Paderborn", 33098, 33106, 1), ("Ingolstadt", 85049, 85057, 1), ("Wolfsburg", 38440, 38448, 1),
        ("Jena", 7743, 7751, 1), ("Görlitz", 2826, 2828, 1), ("Flensburg", 24937, 24944, 1),
        ("Trier", 54290, 54296, 1), ("Koblenz", 56068, 56077, 1), ("Passau", 94032, 94036, 1),
        ("Bamberg", 96047, 96052, 1), ("Bad Tölz", 83646, 83646, 1), ("Schwäbisch Hall", 74523, 74523, 1),
    ),
    "AT": (
        ("Wien", 1010, 1230, 20), ("Graz", 8010, 8055, 4), ("Linz", 4020, 4040, 3),
        ("Salzburg", 5020, 5026, 3),
        ("Innsbruck", 6020, 6080, 2), ("Klagenfurt", 9020, 9073, 1), ("Villach", 9500, 9524, 1),
        ("St. Pölten", 3100, 3109, 1), ("Dornbirn", 6850, 6850, 1), ("Bregenz", 6900, 6900, 1),
    ),
    "CH": (
        ("Zürich", 8001, 8057, 8), ("Basel", 4001, 4059, 4), ("Bern", 3001, 3027, 3),
        ("Winterthur", 8400, 8411, 2),
        ("Luzern", 6003, 6015, 2), ("St. Gallen", 9000, 9016, 2), ("Genève", 1201, 1209, 2),
        ("Lausanne", 1003, 1018, 1), ("Lugano", 6900, 6908, 1),
    ),
    "NL": (
        ("Amsterdam", 1011, 1109, 8), ("Rotterdam", 3011, 3089, 6), ("Den Haag", 2491, 2597, 5),
        ("Utrecht", 3511, 3585, 3), ("Eindhoven", 5611, 5658, 2), ("Groningen", 9711, 9747, 2),
        ("Tilburg", 5011, 5049, 2), ("Almere", 1311, 1362, 1), ("Breda", 4811, 4839, 1),
        ("Nijmegen", 6511, 6546, 1),
    ),
    "GB": (
        ("London", 0, 0, 10), ("Manchester", 0, 0, 3), ("Birmingham", 0, 0, 3), ("Leeds", 0, 0, 2),
        ("Bristol", 0, 0, 2), ("Edinburgh", 0, 0, 1), ("Glasgow", 0, 0, 1), ("Liverpool", 0, 0, 1),
        ("Oxford", 0, 0, 1), ("Cambridge", 0, 0, 1),
    ),
    "DK": (
        ("København", 1050, 2450, 6), ("Aarhus", 8000, 8270, 3), ("Odense", 5000, 5270, 2),
        ("Aalborg", 9000, 9220, 1), ("Esbjerg", 6700, 6715, 1),
    ),
    "PL": (
        ("Warszawa", 0, 4999, 6), ("Kraków", 30001, 31999, 3), ("Wrocław", 50001, 54999, 2),
        ("Poznań", 60001, 61999, 2), ("Gdańsk", 80001, 80999, 2), ("Szczecin", 70001, 71999, 1),
        ("Łódź", 90001, 94999, 1),
    ),
}

# British postcodes are alphanumeric: real outward codes per city, the inward part is drawn.
GB_OUTWARD_CODES = {
    "London": ("SW1A", "SW3", "SE1", "N1", "E14", "W2", "NW3", "EC1V"), "Manchester": ("M1", "M4", "M14",
    "M20"),
    "Birmingham": ("B1", "B15", "B29"), "Leeds": ("LS1", "LS6"), "Bristol": ("BS1", "BS8"),
    "Edinburgh": ("EH1", "EH3", "EH10"), "Glasgow": ("G1", "G12"), "Liverpool": ("L1", "L17"),
    "Oxford": ("OX1", "OX2"), "Cambridge": ("CB1", "CB2"),
}
GB_INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"

STREETS = {
    "DE": (
        "Hauptstraße", "Bahnhofstraße", "Schulstraße", "Gartenstraße", "Dorfstraße", "Bergstraße",
        "Lindenstraße",
        "Kirchstraße", "Waldstraße", "Ringstraße", "Goethestraße", "Schillerstraße", "Mühlenweg", "Am Markt",
        "Friedrichstraße", "Mozartstraße", "Rosenweg", "Birkenweg", "Kastanienallee", "Jahnstraße",
        "Beethovenstraße", "Parkstraße", "Talstraße", "Wiesenweg", "Königsallee", "Am Mühlbach",
        "Uhlandstraße",
        "Blumenstraße", "Lessingstraße", "Fliederweg", "Sonnenstraße", "Hölderlinweg", "Bismarckstraße",
    ),
    "AT": (
        "Hauptstraße", "Mariahilfer Straße", "Landstraßer Hauptstraße", "Herrengasse", "Schulgasse",
        "Kirchengasse",
        "Bahnhofstraße", "Linzer Straße", "Wiener Straße", "Getreidegasse", "Annenstraße", "Lindengasse",
    ),
    "CH": (
        "Bahnhofstrasse", "Hauptstrasse", "Dorfstrasse", "Kirchgasse", "Seestrasse", "Schulhausstrasse",
        "Rosenweg", "Badenerstrasse", "Freiestrasse", "Zürcherstrasse", "Bernstrasse",
    ),
    "NL": (
        "Kerkstraat", "Schoolstraat", "Molenstraat", "Dorpsstraat", "Stationsweg", "Prinsengracht",
        "Keizersgracht",
        "Hoofdstraat", "Julianalaan", "Beatrixstraat", "Wilhelminastraat", "Nieuwe Binnenweg",
    ),
    "GB": (
        "High Street", "Station Road", "Church Lane", "Victoria Road", "Green Lane", "Manor Road",
        "Park Avenue",
        "Kings Road", "Queen Street", "Mill Lane", "The Crescent", "Orchard Close",
    ),
    "DK": ("Vestergade", "Østergade", "Nørregade", "Søndergade", "Strandvejen", "Skovvej", "Kirkevej",
           "Bredgade"),
    "PL": ("ul. Długa", "ul. Polna", "ul. Leśna", "ul. Słoneczna", "ul. Krótka", "ul. Szkolna",
           "ul. Ogrodowa",
           "ul. Marszałkowska", "ul. Piotrkowska", "ul. Floriańska"),
}

# Streets of the French- and Italian-speaking Swiss cities, instead of STREETS["CH"].
STREETS_BY_CITY = {
    "Genève": ("Rue du Rhône", "Chemin des Vignes", "Rue de Lausanne", "Boulevard Carl-Vogt",
               "Rue du Marché"),
    "Lausanne": ("Avenue de la Gare", "Rue de Bourg", "Chemin des Vignes", "Avenue d'Ouchy"),
    "Lugano": ("Via Nassa", "Via Cattedrale", "Corso Pestalozzi", "Via San Gottardo"),
}

_DE_MALE = (
    "Lukas", "Leon", "Maximilian", "Felix", "Paul", "Jonas", "Tim", "Jan", "Niklas", "Elias", "Finn", "Ben",
    "Noah",
    "Luca", "David", "Tobias", "Alexander", "Sebastian", "Michael", "Thomas", "Andreas", "Stefan",
    "Christian",
    "Markus", "Martin", "Frank", "Jürgen", "Klaus", "Wolfgang", "Peter", "Uwe", "Dieter", "Matthias",
    "Daniel",
    "Florian", "Philipp", "Simon", "Moritz", "Jörg", "Björn", "Sören", "Günter", "Hans-Peter", "Karl-Heinz",
    "Max",
    "Johannes", "Benedikt", "Dominik", "Oliver", "Ralf", "Mehmet", "Emre", "Ömer", "Dmitri", "Marco",
)
_DE_FEMALE = (
    "Sophie", "Marie", "Emma", "Mia", "Hannah", "Lena", "Lea", "Anna", "Laura", "Julia", "Sarah", "Lisa",
    "Katharina", "Johanna", "Clara", "Charlotte", "Emilia", "Leonie", "Sabine", "Petra", "Andrea", "Claudia",
    "Susanne", "Monika", "Birgit", "Stefanie", "Nicole", "Melanie", "Christina", "Kerstin", "Ute", "Renate",
    "Ursula", "Gisela", "Käthe", "Jana", "Anja", "Annegret", "Marlene", "Elif", "Zeynep", "Ayşe", "Özlem",
    "Olga", "Natalia", "Franziska", "Heike", "Doris", "Bärbel",
)
_DE_LAST = (
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
    "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz", "Zimmermann",
    "Braun", "Krüger", "Hofmann", "Hartmann", "Lange", "Schmitt", "Werner", "Schmitz", "Krause", "Meier",
    "Lehmann", "Schmid", "Schulze", "Maier", "Köhler", "Herrmann", "König", "Walter", "Mayer", "Huber",
    "Kaiser", "Fuchs", "Peters", "Lang", "Scholz", "Möller", "Weiß", "Jung", "Hahn", "Schubert", "Vogel",
    "Friedrich", "Keller", "Günther", "Frank", "Berger", "Winkler", "Roth", "Beck", "Lorenz", "Baumann",
    "Franke", "Albrecht", "Schuster", "Simon", "Ludwig", "Böhm", "Winter", "Kraus", "Martin", "Schumacher",
    "Krämer", "Vogt", "Stein", "Jäger", "Otto", "Sommer", "Groß", "Seidel", "Heinrich", "Brandt", "Haas",
    "Schreiber", "Graf", "Schulte", "Dietrich", "Ziegler", "Kuhn", "Kühn", "Pohl", "Engel", "Horn", "Busch",
    "Bergmann", "Voigt", "Sauer", "Arnold", "Wolff", "Pfeiffer", "Y\u0131lmaz", "Kaya", "Demir", "Öztürk",
    "von Berg", "von der Heide", "Müller-Lüdenscheidt", "Schmidt-Rottluff",
)
_AT_LAST = ("Gruber", "Huber", "Bauer", "Wagner", "Pichler", "Steiner", "Moser", "Mayer", "Hofer", "Leitner",
            "Berger", "Fuchs", "Eder", "Fischer", "Schmid", "Winkler", "Weber", "Schwarz", "Maier",
            "Schneider")
_AT_MALE = ("Florian", "Lukas", "Sebastian", "Stefan", "Andreas", "Markus", "Christoph", "Wolfgang", "Josef",
            "Franz", "Johann", "Thomas", "Michael", "David", "Jakob", "Tobias")
_AT_FEMALE = ("Valentina", "Magdalena", "Anna", "Lena", "Katharina", "Sarah", "Julia", "Theresa", "Elisabeth",
              "Maria", "Christina", "Barbara", "Sophie", "Verena")
_CH_LAST = ("Meier", "Müller", "Schneider", "Keller", "Weber", "Huber", "Brunner", "Baumann", "Frei",
            "Zimmermann", "Gerber", "Widmer", "Moser", "Fischer", "Steiner", "Graf", "Favre", "Rochat")
_CH_MALE = ("Urs", "Reto", "Beat", "Lukas", "Matthias", "Daniel", "Marco", "Thomas", "Stefan", "Peter",
            "Luca", "Nicolas", "Laurent", "Jürg")
_CH_FEMALE = ("Nicole", "Corinne", "Ursula", "Regula", "Céline", "Léa", "Sandra", "Andrea", "Daniela",
              "Laura", "Chantal", "Mirjam", "Esther")
_NL_MALE = ("Daan", "Sem", "Lucas", "Jesse", "Bram", "Thijs", "Ruben", "Jeroen", "Pieter", "Maarten",
            "Sander",
            "Joost", "Wouter", "Bas")
_NL_FEMALE = ("Sanne", "Emma", "Julia", "Sophie", "Lotte", "Fleur", "Anouk", "Femke", "Ilse", "Marieke",
              "Eline", "Noor")
_NL_LAST = ("de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker", "Janssen", "Visser",
            "Smit",
            "Meijer", "de Boer", "Mulder", "de Groot", "Bos", "Vos", "Hendriks", "van Leeuwen", "Dekker")
_GB_MALE = ("Oliver", "George", "Harry", "Jack", "Charlie", "James", "William", "Thomas", "David", "Daniel",
            "Matthew", "Andrew", "Richard", "Liam")
_GB_FEMALE = ("Olivia", "Amelia", "Isla", "Ava", "Emily", "Sophie", "Grace", "Chloe", "Sarah", "Rebecca",
              "Hannah", "Charlotte", "Siobhan")
_GB_LAST = ("Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas", "Johnson",
            "Roberts", "Walker", "Wright", "Robinson", "Thompson", "O'Brien", "McDonald", "Hughes")
_DK_MALE = ("William", "Noah", "Oscar", "Lucas", "Emil", "Frederik", "Mads", "Søren", "Rasmus", "Anders",
            "Jens")
_DK_FEMALE = ("Emma", "Ida", "Clara", "Freja", "Sofie", "Mette", "Anne", "Kirsten", "Signe", "Maja")
_DK_LAST = ("Nielsen", "Jensen", "Hansen", "Pedersen", "Andersen", "Christensen", "Larsen", "Sørensen",
            "Rasmussen", "Jørgensen", "Petersen", "Madsen", "Kristensen", "Olsen", "Thomsen")
_PL_MALE = ("Jakub", "Kacper", "Szymon", "Mateusz", "Piotr", "Tomasz", "Łukasz", "Paweł", "Krzysztof",
            "Marek")
_PL_FEMALE = ("Anna", "Maria", "Zofia", "Julia", "Katarzyna", "Małgorzata", "Agnieszka", "Magdalena", "Ewa",
              "Joanna")
# Polish surnames ending in -ski/-cki take -ska/-cka for women; see people.py.
_PL_LAST = ("Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski", "Zieliński",
            "Szymański", "Woźniak", "Dąbrowski", "Kozłowski", "Jankowski", "Mazur", "Krawczyk")

# (male first names, female first names, last names) per country
NAMES = {
    "DE": (_DE_MALE, _DE_FEMALE, _DE_LAST),
    "AT": (_AT_MALE + _DE_MALE[:20], _AT_FEMALE + _DE_FEMALE[:20], _AT_LAST + _DE_LAST[:30]),
    "CH": (_CH_MALE + _DE_MALE[:10], _CH_FEMALE + _DE_FEMALE[:10], _CH_LAST),
    "NL": (_NL_MALE, _NL_FEMALE, _NL_LAST),
    "GB": (_GB_MALE, _GB_FEMALE, _GB_LAST),
    "DK": (_DK_MALE, _DK_FEMALE, _DK_LAST),
    "PL": (_PL_MALE, _PL_FEMALE, _PL_LAST),
}

EMAIL_DOMAINS = {
    "DE": ("gmx.de", "web.de", "t-online.de", "gmail.com", "outlook.de", "yahoo.de", "freenet.de",
           "posteo.de"),
    "AT": ("gmx.at", "aon.at", "gmail.com", "chello.at", "outlook.com"),
    "CH": ("bluewin.ch", "gmx.ch", "gmail.com", "hispeed.ch", "sunrise.ch"),
    "NL": ("ziggo.nl", "kpnmail.nl", "gmail.com", "hotmail.nl", "xs4all.nl"),
    "GB": ("gmail.com", "btinternet.com", "hotmail.co.uk", "yahoo.co.uk", "sky.com"),
    "DK": ("mail.dk", "gmail.com", "hotmail.dk", "outlook.dk"),
    "PL": ("wp.pl", "onet.pl", "o2.pl", "gmail.com", "interia.pl"),
}

# Mobile prefixes as dialled nationally (trunk prefix included), and the subscriber length.
MOBILE_PREFIXES = {
    "DE": (("0151", "0152", "0157", "0160", "0162", "0163", "0170", "0171", "0172", "0173", "0174", "0175",
            "0176", "0177", "0178", "0179"), 7),
    "AT": (("0650", "0660", "0664", "0676", "0680", "0681", "0699"), 7),
    "CH": (("075", "076", "077", "078", "079"), 7),
    "NL": (("06",), 8),
    "GB": (("0770", "0740", "0750", "0780", "0790"), 7),
    "DK": (("2", "3", "4", "5"), 7),
    "PL": (("5", "6", "7"), 8),
    # Subscriber numbers are unique per guest up to 2**23 guests; see people.PHONE_NUMBER.
}
COUNTRY_CALLING_CODES = {"DE": "49", "AT": "43", "CH": "41", "NL": "31", "GB": "44", "DK": "45", "PL": "48"}

COMPANY_STEMS = (
    "Müller Logistik", "Bauer Maschinenbau", "Sonnenhof Consulting", "Alpenland Versicherung",
    "Nordlicht Software",
    "Schreiner & Söhne", "Weber Elektrotechnik", "Brückner Pharma", "Isar Immobilien", "Rheinblick Medien",
    "Hansetrans Spedition", "Kessler Automotive", "Lindner Bau", "Vogel Steuerberatung", "Grünwald Energie",
    "Falkenstein Reisen", "Becker & Partner", "Seeblick Events", "Hofmann Druck", "Zeller Feinkost",
)
COMPANY_FORMS = ("GmbH", "GmbH & Co. KG", "AG", "KG", "e.K.", "SE")

# The resort's restaurants, bars and night club: (outlet, kind, lowest and highest bill per cover in cents).
OUTLETS = (
    ("Restaurant Seeterrasse", "restaurant", 2800, 6500), ("Trattoria Lago", "restaurant", 1900, 4200),
    ("Brauhaus am Park", "restaurant", 1700, 3900), ("Steakhouse Ranch", "restaurant", 3200, 7800),
    ("Sushi Kaito", "restaurant", 2400, 5600), ("Buffet Panorama", "restaurant", 2900, 3900),
    ("Wok & Curry", "restaurant", 1400, 2900), ("Pizzeria Vesuvio", "restaurant", 1200, 2800),
    ("Gourmetrestaurant Sternblick", "restaurant", 9500, 19500), ("Alpenstube", "restaurant", 1900, 4400),
    ("Taverna Mykonos", "restaurant", 1800, 3900), ("Burger Pier", "restaurant", 1200, 2400),
    ("Café Dolphin", "restaurant", 700, 1900), ("Strandbistro", "restaurant", 900, 2200),
    ("Fischhaus Kutter", "restaurant", 2200, 4800), ("Tapas Bar Sol", "restaurant", 1600, 3600),
    ("La Crêperie", "restaurant", 800, 1800), ("Kinderrestaurant Flipper", "restaurant", 800, 1500),
    ("Vegan Garden", "restaurant", 1500, 3200), ("Grillhütte", "restaurant", 1600, 3400),
    ("Bäckerei & Konditorei", "restaurant", 500, 1400), ("Asia Street Kitchen", "restaurant", 1300, 2700),
    ("Frühstücksrestaurant Morgenrot", "restaurant", 1800, 2600), ("Pool Snack", "restaurant", 600, 1600),
    ("Weinstube Rebstock", "restaurant", 2400, 5200),
    ("Lobby Bar", "bar", 900, 3200), ("Sky Bar", "bar", 1400, 4800), ("Pool Bar Lagune", "bar", 700, 2600),
    ("Cocktailbar Havana", "bar", 1200, 4200), ("Night Club Aurora", "night_club", 1500, 9500),
)

# The resort's shops: (shop, [(sku, product, unit price in cents)]).
SHOPS = (
    ("Resort Boutique", (("BOU-1001", "Leinenhemd", 6900), ("BOU-1002", "Sommerkleid", 8900),
                         ("BOU-1003", "Strohhut", 2900), ("BOU-1004", "Sonnenbrille", 4900))),
    ("Souvenirshop Delfin", (("SOU-2001", "Plüschdelfin", 1999), ("SOU-2002", "Postkartenset", 499),
                             ("SOU-2003", "Tasse Resort", 1299), ("SOU-2004", "Schlüsselanhänger", 599))),
    ("Bademoden Wave", (("BAD-3001", "Badeanzug", 5900), ("BAD-3002", "Badeshorts", 3900),
                        ("BAD-3003", "Schwimmbrille", 1499), ("BAD-3004", "Badetuch XXL", 2999))),
    ("Kiosk Lagune", (("KIO-4001", "Sonnencreme LSF 50", 1599), ("KIO-4002", "Zeitung", 350),
                      ("KIO-4003", "Wasser 0,5 l", 250), ("KIO-4004", "Eis am Stiel", 290))),
    ("Spielwaren Kapitän", (("SPI-5001", "Wasserpistole", 1299), ("SPI-5002", "Schwimmflügel", 999),
                            ("SPI-5003", "Sandspielzeug Set", 1499), ("SPI-5004", "Plüschorca", 2499))),
    ("Juwelier Perle", (("JUW-6001", "Perlenkette", 24900), ("JUW-6002", "Silberarmband", 8900),
                        ("JUW-6003", "Ohrstecker Delfin", 4900))),
    ("Sportshop Aktiv", (("SPO-7001", "Laufshirt", 3499), ("SPO-7002", "Tennisbälle 4er", 999),
                         ("SPO-7003", "Yogamatte", 3999), ("SPO-7004", "Trinkflasche", 1999))),
    ("Feinkost Genuss", (("FEI-8001", "Olivenöl 0,5 l", 1490), ("FEI-8002", "Pralinen", 1890),
                         ("FEI-8003", "Hauswein Rotwein", 1290), ("FEI-8004", "Schokolade", 490))),
    ("Drogerie Vital", (("DRO-9001", "After Sun", 999), ("DRO-9002", "Zahnbürste", 299),
                        ("DRO-9003", "Shampoo", 499), ("DRO-9004", "Pflaster", 349))),
    ("Buchhandlung Seite", (("BUC-1101", "Roman Taschenbuch", 1200), ("BUC-1102", "Kinderbuch", 1499),
                            ("BUC-1103", "Reiseführer", 1999))),
    ("Fotostudio Klick", (("FOT-1201", "Delfinfoto Print", 1900), ("FOT-1202", "Fotobuch", 4900),
                          ("FOT-1203", "Foto digital", 1500))),
    ("Spa Shop Lotus", (("SPA-1301", "Massageöl", 2490), ("SPA-1302", "Duftkerze", 1890),
                        ("SPA-1303", "Bademantel", 7900))),
    ("Surfshop Brandung", (("SUR-1401", "Boardshorts", 4900), ("SUR-1402", "Neoprenshirt", 5900),
                           ("SUR-1403", "Flip-Flops", 1999))),
    ("Kindermode Zwerg", (("KIN-1501", "Kinder-T-Shirt", 1499), ("KIN-1502", "Kinderbadehose", 1699),
                          ("KIN-1503", "Sonnenhut Kinder", 1299))),
    ("Weinkeller", (("WEI-1601", "Riesling Spätlese", 1890), ("WEI-1602", "Sekt Brut", 1490),
                    ("WEI-1603", "Rotwein Barrique", 3290))),
    ("Optiker Weitblick", (("OPT-1701", "Sonnenbrille polarisiert", 12900),
                           ("OPT-1702", "Brillenetui", 1500))),
    ("Tabak & Presse", (("TAB-1801", "Zeitschrift", 590), ("TAB-1802", "Briefmarken", 95),
                        ("TAB-1803", "Lotto Schein", 300))),
    ("Elektro Shop", (("ELE-1901", "Ladekabel USB-C", 1999), ("ELE-1902", "Powerbank", 3999),
                      ("ELE-1903", "Kopfhörer", 4999))),
    ("Blumen Flora", (("BLU-2001", "Blumenstrauß", 2900), ("BLU-2002", "Rose einzeln", 450))),
    ("Delfin Fanshop", (("FAN-2101", "Delfin T-Shirt", 2499), ("FAN-2102", "Kappe", 1999),
                        ("FAN-2103", "Trinkbecher Delfin", 899))),
)

# The product category of each shop's articles in the product catalogue, by shop.
SHOP_CATEGORIES = {
    "Resort Boutique": "fashion", "Souvenirshop Delfin": "souvenirs", "Bademoden Wave": "swimwear",
    "Kiosk Lagune": "kiosk", "Spielwaren Kapitän": "toys", "Juwelier Perle": "jewellery",
    "Sportshop Aktiv": "sports", "Feinkost Genuss": "delicatessen", "Drogerie Vital": "drugstore",
    "Buchhandlung Seite": "books", "Fotostudio Klick": "photo", "Spa Shop Lotus": "spa",
    "Surfshop Brandung": "surf", "Kindermode Zwerg": "kids_fashion", "Weinkeller": "wine",
    "Optiker Weitblick": "optician", "Tabak & Presse": "press", "Elektro Shop": "electronics",
    "Blumen Flora": "flowers", "Delfin Fanshop": "fan_shop",
}

# Tickets of the water park and the dolphinarium: (attraction, ticket type, sku, name, price in
# cents, name at the hotel-guest rate). Hotel guests get HOTEL_GUEST_DISCOUNT_PERCENT off, under
# the SKU with the suffix "-HOTEL"; a family ticket is two adults and their children.
TICKETS = (
    ("water_park", "adult", "WP-DAY", "Wasserwelt Tageskarte", 3900, "Wasserwelt Tageskarte Hotelgast"),
    ("water_park", "child", "WP-DAY-CHILD", "Wasserwelt Tageskarte Kind", 2700,
     "Wasserwelt Tageskarte Kind Hotelgast"),
    ("water_park", "family", "WP-FAMILY", "Wasserwelt Familienkarte", 11900,
     "Wasserwelt Familienkarte Hotelgast"),
    ("dolphinarium", "adult", "DOL-SHOW", "Delfinshow", 2400, "Delfinshow Hotelgast"),
    ("dolphinarium", "child", "DOL-SHOW-CHILD", "Delfinshow Kind", 1600, "Delfinshow Kind Hotelgast"),
    ("dolphinarium", "family", "DOL-FAMILY", "Delfinshow Familienkarte", 6900,
     "Delfinshow Familienkarte Hotelgast"),
)
HOTEL_GUEST_DISCOUNT_PERCENT = 10

# (room type, nightly rate in cents, suits a family) of the 1,500-room hotel.
ROOM_TYPES = (
    ("EZ Standard", 11900, False), ("DZ Standard", 16900, False), ("DZ Superior", 21900, False),
    ("DZ Seeblick", 24900, False), ("Familienzimmer", 27900, True), ("Familiensuite", 38900, True),
    ("Junior Suite", 34900, False), ("Suite Panorama", 59000, False),
)

WEB_PAGES = (
    "/", "/hotel", "/hotel/zimmer", "/hotel/angebote", "/restaurants", "/restaurants/sternblick",
    "/wasserpark",
    "/wasserpark/tickets", "/delfinarium", "/delfinarium/shows", "/shops", "/events", "/wellness", "/kontakt",
    "/buchen", "/newsletter", "/familien", "/nightlife", "/faq", "/angebote/sommer", "/angebote/winter",
)
WEB_REFERRERS = ("", "", "", "https://www.google.com/", "https://www.google.de/", "https://www.bing.com/",
                 "https://www.facebook.com/", "https://www.instagram.com/", "https://duckduckgo.com/")
WEB_COMMENT_SUBJECTS = ("hotel", "restaurant", "water_park", "dolphinarium", "shop", "night_club")
WEB_COMMENTS = (
    "Toller Aufenthalt, wir kommen wieder!", "Das Frühstück war hervorragend.",
    "Leider zu voll am Wochenende.",
    "Die Delfinshow war ein Highlight für die Kinder.", "Zimmer sauber, Personal freundlich.",
    "Wartezeiten an den Rutschen zu lang.", "Great stay, lovely staff.", "Preis-Leistung stimmt.",
    "Parkplatzsituation schwierig.", "Super Cocktails in der Sky Bar!",
)
SUPPORT_TOPICS = (
    ("booking_change", "Können wir unsere Buchung um einen Tag verlängern?"),
    ("invoice", "Bitte senden Sie mir die Rechnung erneut zu."),
    ("lost_and_found", "Ich habe meine Sonnenbrille im Restaurant liegen lassen."),
    ("complaint", "Die Klimaanlage in unserem Zimmer war defekt."),
    ("newsletter", "Bitte tragen Sie mich aus dem Newsletter aus."),
    ("accessibility", "Gibt es barrierefreie Zimmer mit Seeblick?"),
    ("group_booking", "Wir planen eine Firmenfeier für 40 Personen."),
)
# fmt: on
